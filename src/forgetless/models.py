"""The multilayer perceptrons the benchmarks use."""
from __future__ import annotations

from typing import Sequence

from torch import nn


def mlp(input_size: int = 784, hidden: Sequence[int] = (128,), n_outputs: int = 5, dropout: float = 0.0) -> nn.Sequential:
    """Flatten → [Linear → ReLU → (Dropout)] per hidden layer → Linear logits.

    The seed post's network is ``mlp(784, (128,), 5)``; van de Ven & Tolias 2019 use
    ``mlp(784, (400, 400), ·)`` on split MNIST and ``mlp(1024, (1000, 1000), 10)`` on permuted MNIST
    (32×32 zero-padded inputs). ``nn.Linear``'s default initialisation, U(±1/√fan_in) for weights and
    biases, is the one their code uses.

    Example:
        >>> mlp(784, (128,), 5)
        Sequential(
          (0): Flatten(start_dim=1, end_dim=-1)
          (1): Linear(in_features=784, out_features=128, bias=True)
          (2): ReLU()
          (3): Linear(in_features=128, out_features=5, bias=True)
        )
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = input_size
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)
