import pytest
import torch

from forgetless.benchmarks import Split
from forgetless.models import mlp
from forgetless.training import TrainingError, accuracy, minibatches, train_task


def _split(n=256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 784, generator=g)
    return Split(x, (x[:, 0] > 0).long())


def test_nan_loss_names_the_procedure_and_epoch():
    model = mlp(784, (16,), 2)
    data = _split()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"ewc, task B: the loss became nan at epoch 1"):
        train_task(model, data, steps=5, optimizer=opt, generator=torch.Generator(), label="ewc, task B")


def test_training_learns_and_accuracy_restores_mode():
    model = mlp(784, (16,), 2)
    data = _split()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_task(model, data, steps=60, batch_size=32, optimizer=opt, generator=torch.Generator().manual_seed(0))
    model.train()
    assert accuracy(model, data) > 0.9
    assert model.training


def test_minibatches_cover_every_sample_once():
    data = _split(100)
    seen = torch.cat([y for _, y in minibatches(Split(data.x, torch.arange(100)), 32, torch.Generator())])
    assert sorted(seen.tolist()) == list(range(100))


def test_accuracy_counts_every_position_of_sequence_outputs_but_ignored_ones():
    import torch

    class Echo(torch.nn.Module):  # logits (N, T, C) that predict the input tokens themselves
        def forward(self, x):
            return torch.nn.functional.one_hot(x, 4).float()

    x = torch.tensor([[0, 1, 2], [3, 3, 0]])
    y = torch.tensor([[0, 1, 3], [3, -100, -100]])  # 3 of the 4 counted positions are right
    assert accuracy(Echo(), Split(x, y)) == 0.75
