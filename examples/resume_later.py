"""Train task 1 today, task 2 another day: ``forgetless.save`` the regularizer, ``forgetless.load`` it later.

    python examples/resume_later.py --out DIR                 # both parts, one after the other
    python examples/resume_later.py --out DIR --part first    # train task 1, save model + EWC
    python examples/resume_later.py --out DIR --part later    # (a new process) load both, train task 2

The two parts share nothing but the files in ``--out`` (default: a temporary folder, for ``both``
only): the model's weights (``model.safetensors``, as you would save any model) and the EWC state
(``ewc.safetensors``: class, hyperparameters, Fisher and anchor, with a checksum; loading it runs no
code). The tasks are the synthetic ones of ``plain_pytorch.py``, regenerated from their seed.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import forgetless

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


def new_model() -> nn.Module:
    return nn.Sequential(nn.Linear(INPUTS, 128), nn.ReLU(), nn.Linear(128, CLASSES))


def train(model, data, regularizer, *, epochs=4, batch_size=32, seed=1):
    x, y = data
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    regularizer.begin_task(model)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch]) + regularizer.penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            regularizer.after_step(model)
    regularizer.consolidate(model, data)


@torch.no_grad()
def accuracy(model, data) -> float:
    model.eval()
    x, y = data
    return (model(x).argmax(1) == y).float().mean().item()


def first(out: Path, strength: float, seed: int, epochs: int) -> None:
    """Day 1: task 1, then save the model and the regularizer."""
    torch.manual_seed(seed)
    (train1, test1), _ = make_tasks(seed)
    model, ewc = new_model(), forgetless.EWC(strength=strength)
    train(model, train1, ewc, epochs=epochs)
    save_file(model.state_dict(), out / "model.safetensors")
    forgetless.save(ewc, out / "ewc.safetensors")
    print(f"first: task 1 accuracy {accuracy(model, test1):.3f}; saved model.safetensors and "
          f"ewc.safetensors ({ewc!r}, {ewc.tasks_seen} task)")


def later(out: Path, seed: int, epochs: int) -> None:
    """Another day, another process: rebuild the model, load both files, train task 2."""
    (_, test1), (train2, test2) = make_tasks(seed)
    model = new_model()
    model.load_state_dict(load_file(out / "model.safetensors"))
    ewc = forgetless.load(out / "ewc.safetensors")   # the right class, hyperparameters and state
    print(f"later: loaded {ewc!r} after {ewc.tasks_seen} task; task 1 accuracy {accuracy(model, test1):.3f}")
    train(model, train2, ewc, epochs=epochs)
    forgetless.save(ewc, out / "ewc.safetensors")     # ready for task 3
    print(f"later: after task 2, task 1 accuracy {accuracy(model, test1):.3f}, "
          f"task 2 accuracy {accuracy(model, test2):.3f} (EWC now protects {ewc.tasks_seen} tasks)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("first", "later", "both"), default="both")
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--strength", type=float, default=200.0, help="EWC's λ (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4, help="per task (default 4)")
    args = parser.parse_args(argv)
    if args.out is None and args.part != "both":
        parser.error("--part first/later needs --out: the two parts only share its files")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.part in ("first", "both"):
            first(out, args.strength, args.seed, args.epochs)
        if args.part in ("later", "both"):
            later(out, args.seed, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
