"""EWC in Lightning: ``EWCCallback`` runs the lifecycle, ``training_step`` adds ``penalty(self)``.

    pip install 'forgetless[lightning]'
    python examples/lightning_callback.py [--strength 200] [--out DIR]

The same two synthetic tasks as ``plain_pytorch.py`` (a tiny "permuted MNIST"), one ``Trainer.fit``
per task with the same callback. The checkpoint written after task 2 (to ``--out``, default a
temporary folder) holds the EWC state; the script reloads it into a fresh callback to show it.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import forgetless
from forgetless.integrations.lightning import EWCCallback, penalty

INPUTS, CLASSES = 64, 10


def make_tasks(seed: int = 0, n_train: int = 1000, n_test: int = 1000):
    """[(train, test), (train, test)]: ten noisy binary patterns; task 2 permutes the inputs."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(CLASSES, INPUTS, generator=g) < 0.25).float()
    permutations = [torch.arange(INPUTS), torch.randperm(INPUTS, generator=g)]

    def sample(permutation, n):
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = patterns[y] + 0.8 * torch.randn(n, INPUTS, generator=g)
        return x[:, permutation], y

    return [(sample(p, n_train), sample(p, n_test)) for p in permutations]


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(INPUTS, 128), nn.ReLU(), nn.Linear(128, CLASSES))

    def forward(self, x):
        return self.net(x)  # logits: what the Fisher is computed from

    def training_step(self, batch, batch_idx):
        x, y = batch
        task_loss = F.cross_entropy(self(x), y)
        ewc_penalty = penalty(self)          # 0 during task 1; callbacks cannot change the loss themselves
        self.log_dict({"task_loss": task_loss, "ewc_penalty": ewc_penalty})
        return task_loss + ewc_penalty

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@torch.no_grad()
def accuracy(model, data) -> float:
    x, y = data
    model.eval()
    correct = (model(x).argmax(1) == y).float().mean().item()
    model.train()  # Lightning keeps the mode it finds: leave the model ready for the next fit
    return correct


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strength", type=float, default=200.0, help="EWC's λ (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint (default: a temp dir)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)     # no per-fit banners
    warnings.filterwarnings("ignore", ".*does not have many workers")   # tensors in memory: no workers needed
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)")  # Lightning vs newer torch
    L.seed_everything(args.seed, verbose=False)

    tasks = make_tasks(args.seed)
    model = Classifier()
    callback = EWCCallback(forgetless.EWC(strength=args.strength))
    for t, (train, _) in enumerate(tasks, start=1):
        loader = DataLoader(TensorDataset(*train), batch_size=32, shuffle=True)
        trainer = L.Trainer(max_epochs=args.epochs, callbacks=[callback], accelerator="cpu", devices=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(model, loader)               # begin_task, after_step, consolidate: the callback's job
        scores = ", ".join(f"task {k} {accuracy(model, test):.3f}" for k, (_, test) in enumerate(tasks[:t], 1))
        print(f"after task {t}: {scores} (EWC tasks consolidated: {callback.regularizer.tasks_seen})")

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "after-task-2.ckpt"
        trainer.save_checkpoint(path)
        again = EWCCallback(forgetless.EWC(strength=args.strength))
        again.load_state_dict(torch.load(path, weights_only=True)["callbacks"][again.state_key])
        same = all(torch.equal(a, b) for a, b in zip(again.regularizer.state_dict().values(),
                                                     callback.regularizer.state_dict().values()))
        print(f"checkpoint {path.name}: EWC state restored from it ({again.regularizer.tasks_seen} tasks, "
              f"identical: {same})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
