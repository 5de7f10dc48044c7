"""EWC in a hand-written PyTorch loop: how much of task 1 survives training on task 2, with and without it.

    python examples/plain_pytorch.py [--strength 200] [--seed 0] [--epochs 4]

Two small synthetic tasks (a few seconds on a CPU, nothing downloaded): ten classes, each a noisy
binary pattern over 64 inputs; task 2 shows the same patterns through a fixed permutation of the
inputs (a tiny "permuted MNIST"). The network learns task 1, then task 2; without EWC it forgets
much of task 1, with EWC it keeps most of it, at some cost on task 2 (``--strength`` trades the two).
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

import forgetless

INPUTS, CLASSES = 64, 10


def make_tasks(seed: int = 0, n_train: int = 1000, n_test: int = 1000):
    """[(train, test), (train, test)]: each split an (x, y) pair of tensors."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(CLASSES, INPUTS, generator=g) < 0.25).float()
    permutations = [torch.arange(INPUTS), torch.randperm(INPUTS, generator=g)]

    def sample(permutation, n):
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = patterns[y] + 0.8 * torch.randn(n, INPUTS, generator=g)
        return x[:, permutation], y

    return [(sample(p, n_train), sample(p, n_test)) for p in permutations]


def train(model, data, regularizer=None, *, epochs=4, batch_size=32, seed=1):
    """The usual loop; the three EWC lines are marked."""
    x, y = data
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    if regularizer is not None:
        regularizer.begin_task(model)                        # EWC: no-op (SI needs it)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            if regularizer is not None:
                loss = loss + regularizer.penalty(model)      # EWC: exactly 0 until the first consolidate
            opt.zero_grad()
            loss.backward()
            if regularizer is not None:
                regularizer.before_step(model)                # optional; SI then keeps no copy of θ
            opt.step()
            if regularizer is not None:
                regularizer.after_step(model)                 # EWC: no-op (SI accumulates here)
    if regularizer is not None:
        regularizer.consolidate(model, data)                  # EWC: Fisher + anchor of this task


@torch.no_grad()
def accuracy(model, data) -> float:
    model.eval()
    x, y = data
    return (model(x).argmax(1) == y).float().mean().item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strength", type=float, default=200.0, help="EWC's λ (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4, help="per task (default 4)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    (train1, test1), (train2, test2) = make_tasks(args.seed)
    model = nn.Sequential(nn.Linear(INPUTS, 128), nn.ReLU(), nn.Linear(128, CLASSES))
    ewc = forgetless.EWC(strength=args.strength)
    train(model, train1, ewc, epochs=args.epochs)  # task 1 (ends with ewc.consolidate)
    print(f"task 1 accuracy after task 1: {accuracy(model, test1):.3f}")

    results = {}
    for label, regularizer in (("without EWC", None), ("with EWC", ewc)):
        copy_of_model = copy.deepcopy(model)       # both start task 2 from the same network
        train(copy_of_model, train2, regularizer, epochs=args.epochs)
        results[label] = (accuracy(copy_of_model, test1), accuracy(copy_of_model, test2))
        print(f"after task 2, {label:>11}: task 1 {results[label][0]:.3f}, task 2 {results[label][1]:.3f}")
    print(f"task 1 accuracy after task 2: without EWC {results['without EWC'][0]:.3f}, "
          f"with EWC {results['with EWC'][0]:.3f} ({ewc!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
