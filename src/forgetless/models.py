"""The networks the benchmarks train. A benchmark's registry entry names its model factory,
``factory(bench, **options) -> nn.Module``; the factory's keyword options are run settings."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from torch import nn

if TYPE_CHECKING:  # annotations only: the benchmarks' registry imports this module
    from .benchmarks import Benchmark


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


def image_mlp(bench: Benchmark, *, hidden: tuple[int, ...] = (400, 400), dropout: float = 0.0) -> nn.Sequential:
    """The image benchmarks' network: an MLP from the flattened input to the benchmark's outputs.

    Args:
        hidden: hidden layer widths, e.g. 400,400.
        dropout: dropout probability after each hidden layer (0: none).

    Example:
        >>> import torch
        >>> from forgetless.benchmarks import Benchmark, Split, Task
        >>> s = Split(torch.zeros(2, 784), torch.zeros(2, dtype=torch.long))
        >>> image_mlp(Benchmark("toy", (Task("t", s, s, s, (0, 1), (0, 1)),), 2, "domain"), hidden=(8,))[-1]
        Linear(in_features=8, out_features=2, bias=True)
    """
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must list layer widths >= 1, got {tuple(hidden)}")
    return mlp(bench.tasks[0].train.x[0].numel(), hidden, bench.n_outputs, dropout)


def byte_model(bench: Benchmark, *, width: int = 128, layers: int = 2, heads: int = 4, mlp_ratio: int = 4,
               dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """The ``prose-code`` network: a byte-level causal transformer (:mod:`forgetless.byte_transformer`)
    whose context is the benchmark's window length and whose head has one unit per output (a byte).

    Args:
        width: the transformer's model dimension.
        layers: transformer blocks.
        heads: attention heads (width must be a multiple).
        mlp_ratio: each block's MLP has mlp_ratio·width hidden units.
        dropout: dropout probability on attention weights and residual branches (0: none).
        seed: initialises the weights (the run's seed; the global RNG is untouched).

    Example:
        >>> import torch
        >>> from forgetless.benchmarks import Benchmark, Split, Task
        >>> s = Split(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
        >>> bench = Benchmark("toy", (Task("t", s, s, s, (0,), (0,)),), 256, "domain")
        >>> model = byte_model(bench, width=16, layers=1, heads=2)
        >>> model.config.seq_len, tuple(model(s.x).shape)
        (8, (2, 8, 256))
    """
    from .byte_transformer import byte_transformer

    seq_len = bench.tasks[0].train.x.shape[1]
    return byte_transformer(seed, seq_len=seq_len, vocab=bench.n_outputs, width=width, layers=layers, heads=heads,
                            mlp_ratio=mlp_ratio, dropout=dropout)
