"""EWCCallback in real Lightning fits: two tiny tasks on the CPU, checkpoints, resuming mid-task."""
from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning.pytorch")  # only users without the extra skip; CI installs it

from forgetless import EWC, SI, fisher_diagonal  # noqa: E402
from forgetless.integrations.lightning import EWCCallback, penalty  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*smaller than the logging interval:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*callbacks used to create the checkpoint need to be provided"),
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated"),  # Lightning vs new torch
]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)  # no "GPU available: False" banners per fit
    yield
    logger.setLevel(level)


class Net(L.LightningModule):
    def __init__(self, add_penalty: bool = True):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
        self.add_penalty = add_penalty
        self.penalties: list[float] = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        if not self.add_penalty:
            return loss
        p = penalty(self)
        self.penalties.append(float(p.detach()))
        return loss + p

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


def _task(seed: int, n: int = 48):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) + 2.0 * seed  # the tasks live in different places
    return x, (x[:, 0] > 2.0 * seed).long() + (x[:, 1] > 2.0 * seed).long()


def _loader(data, shuffle=True):
    return DataLoader(TensorDataset(*data), batch_size=16, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(0))


def _trainer(callbacks, max_epochs=2, **kwargs):
    options = dict(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    options.update(kwargs)
    return L.Trainer(callbacks=callbacks, **options)


def _assert_state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


def test_two_tasks_penalty_fisher_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    model, task1, task2 = Net(), _task(1), _task(2)
    callback = EWCCallback(EWC(strength=50.0))

    _trainer([callback]).fit(model, _loader(task1))
    after_task1 = copy.deepcopy(model.net)
    assert model.penalties and all(p == 0.0 for p in model.penalties)  # exactly 0 before consolidate
    assert callback.regularizer.tasks_seen == 1

    # the consolidated Fisher is fisher_diagonal on task 1's data, at the parameters after task 1
    fisher = fisher_diagonal(after_task1, task1)
    for name, f in fisher.items():
        torch.testing.assert_close(callback.regularizer.importance[f"net.{name}"], f, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(callback.regularizer.anchor[f"net.{name}"],
                                   after_task1.get_parameter(name).detach(), rtol=0, atol=0)

    model.penalties.clear()
    trainer = _trainer([callback])
    trainer.fit(model, _loader(task2))
    assert model.penalties[0] == 0.0       # the first step of task 2 starts at the anchor
    assert all(p > 0 for p in model.penalties[1:]) and len(model.penalties) == 6
    assert callback.regularizer.tasks_seen == 2

    # the checkpoint holds the regularizer's state, loadable without pickle's code execution
    path = tmp_path / "after-task2.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    fresh = EWCCallback(EWC(strength=50.0))
    fresh.load_state_dict(checkpoint["callbacks"][fresh.state_key])
    _assert_state_equal(fresh.regularizer, callback.regularizer)
    # ... and Lightning itself restores it (nothing left to train: only the restore runs)
    restored = EWCCallback(EWC(strength=50.0))
    _trainer([restored]).fit(Net(), _loader(task2), ckpt_path=path)
    _assert_state_equal(restored.regularizer, callback.regularizer)


def test_resuming_mid_task_continues_si_path(tmp_path):
    """Two epochs straight == one epoch, a ModelCheckpoint (saved before consolidate), resume to two."""
    data = _task(1)

    torch.manual_seed(0)
    straight = EWCCallback(SI(strength=1.0))
    _trainer([straight]).fit(Net(), _loader(data, shuffle=False))

    torch.manual_seed(0)
    first = EWCCallback(SI(strength=1.0))
    saver = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer([first, saver], max_epochs=1, enable_checkpointing=True).fit(Net(), _loader(data, shuffle=False))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["callbacks"][first.state_key]["in_task"] is True

    resumed = EWCCallback(SI(strength=1.0))
    _trainer([resumed]).fit(Net(), _loader(data, shuffle=False), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.regularizer.tasks_seen == 1
    for name, omega in straight.regularizer.importance.items():
        torch.testing.assert_close(resumed.regularizer.importance[name], omega, rtol=1e-5, atol=1e-7)


def test_forgetting_the_penalty_fails_loudly():
    callback = EWCCallback(EWC())
    with pytest.raises(RuntimeError, match="penalty was not added to the loss"):
        _trainer([callback], max_epochs=1).fit(Net(add_penalty=False), _loader(_task(1)))
    # ... unless asked not to check
    _trainer([EWCCallback(EWC(), require_penalty=False)], max_epochs=1).fit(
        Net(add_penalty=False), _loader(_task(1)))


def test_penalty_without_a_callback_is_zero():
    assert float(penalty(Net())) == 0.0  # no trainer
    model = Net()
    _trainer([], max_epochs=1).fit(model, _loader(_task(1)))
    assert model.penalties and all(p == 0.0 for p in model.penalties)


def test_a_checkpoint_of_another_regularizer_is_refused():
    state = EWCCallback(SI()).state_dict()
    with pytest.raises(ValueError, match="holds a SI state, this callback has a EWC"):
        EWCCallback(EWC()).load_state_dict(state)


def test_explicit_consolidation_data_and_output_transform():
    torch.manual_seed(0)
    model, task1 = Net(), _task(1)
    subset = (task1[0][:20], task1[1][:20] % 2)
    callback = EWCCallback(EWC(estimator="empirical"), data=lambda trainer, module: [subset],
                           output_transform=lambda z: z[:, :2])
    _trainer([callback], max_epochs=1).fit(model, _loader(task1))
    expected = fisher_diagonal(model.net, subset, estimator="empirical", output_transform=lambda z: z[:, :2])
    torch.testing.assert_close(callback.regularizer.importance["net.2.weight"], expected["2.weight"],
                               rtol=1e-5, atol=1e-9)
