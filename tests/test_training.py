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


# --- sequence targets (language models) -----------------------------------------------------------
import copy  # noqa: E402
import math  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from forgetless import SI  # noqa: E402
from forgetless.byte_transformer import byte_transformer  # noqa: E402
from forgetless.training import accuracy_and_loss, task_loss, train_joint  # noqa: E402


def _sequences(n=24, t=8, seed=0):
    """Byte windows of a repeating pattern (learnable), a few targets ignored (-100)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 5, (n, 1), generator=g)
    x = (start + torch.arange(t)) % 5 + 97
    y = (x + 1 - 97) % 5 + 97
    y[::3, -2:] = -100
    return Split(x, y)


def test_sequence_loss_is_the_mean_over_scored_positions():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(3, 4, 6, generator=g), torch.randint(0, 6, (3, 4), generator=g)
    y[0, 1] = y[2, 3] = -100
    by_hand = [-torch.log_softmax(z[n, t], 0)[y[n, t]] for n in range(3) for t in range(4) if y[n, t] != -100]
    torch.testing.assert_close(task_loss(z, y), torch.stack(by_hand).mean())
    z2, y2 = z[:, 0], y[:, 0].clamp(min=0)
    assert torch.equal(task_loss(z2, y2), F.cross_entropy(z2, y2))  # the classifier path: the same call


def test_sequence_accuracy_and_loss_against_a_loop():
    model = byte_transformer(seq_len=8, width=16, layers=1, heads=2)
    data = _sequences()
    acc, loss = accuracy_and_loss(model, data, batch_size=16)  # 16 tokens: batches of 2 windows
    model.eval()
    right = total = 0
    nll = 0.0
    with torch.no_grad():
        for x, y in zip(data.x, data.y):
            z = model(x.unsqueeze(0))[0]
            for t in range(len(y)):
                if y[t] != -100:
                    right += int(z[t].argmax() == y[t])
                    nll -= float(torch.log_softmax(z[t], 0)[y[t]])
                    total += 1
    assert total == 24 * 8 - 8 * 2
    assert acc == pytest.approx(right / total) and acc == accuracy(model, data)
    assert loss == pytest.approx(nll / total, rel=1e-5)


def test_train_task_learns_sequences_with_a_regularizer():
    model = byte_transformer(seq_len=8, width=16, layers=1, heads=2)
    data = _sequences(64)
    before = accuracy_and_loss(model, data)[1]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    si = SI(strength=1.0)
    train_task(model, data, steps=40, batch_size=16, optimizer=opt, generator=torch.Generator().manual_seed(0),
               regularizer=si)
    si.consolidate(model)
    acc, after = accuracy_and_loss(model, data)
    assert after < before - 1.0 and acc > 0.9
    assert si.tasks_seen == 1 and float(si.penalty(model).detach()) == 0.0


def test_joint_training_of_one_sequence_task_is_train_task():
    """Same batches, same per-token mean: one joint step on a single part == one train_task step."""
    data = _sequences()
    a = byte_transformer(seq_len=8, width=16, layers=1, heads=2)
    b = copy.deepcopy(a)
    train_task(a, data, steps=2, batch_size=8, optimizer=torch.optim.SGD(a.parameters(), lr=0.5),
               generator=torch.Generator().manual_seed(3))
    train_joint(b, [(data, None)], steps=2, batch_size=8, optimizer=torch.optim.SGD(b.parameters(), lr=0.5),
                generator=torch.Generator().manual_seed(3))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7, msg=name)
    assert not torch.equal(a.head.weight, byte_transformer(seq_len=8, width=16, layers=1, heads=2).head.weight)
    assert math.isfinite(accuracy_and_loss(a, data)[1])
