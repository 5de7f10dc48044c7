"""A small byte-level causal transformer (GPT-style, pre-norm) for the ``prose-code`` benchmark.

Built only from ``nn.Embedding``, ``nn.LayerNorm`` and ``nn.Linear`` modules, with attention written
out (scores, causal mask, softmax, weighted sum) rather than ``scaled_dot_product_attention``, so the
per-sample Fisher engine can use its rule for each layer type and its ``torch.func`` fallback works
on the rest. The output head is NOT tied to the token embedding: a weight used by two modules would
leave both to the slower generic path, and at 256 bytes the head is small anyway.

Example:
    >>> model = ByteTransformer(ByteTransformerConfig(seq_len=16, width=32, layers=1, heads=2))
    >>> x = torch.randint(0, 256, (3, 16))
    >>> tuple(model(x).shape)
    (3, 16, 256)
    >>> y = x.clone(); y[:, 8:] = 0          # later bytes do not change earlier outputs
    >>> bool(torch.allclose(model(x)[:, :8], model(y)[:, :8]))
    True
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ByteTransformer", "ByteTransformerConfig", "byte_transformer"]


@dataclass(frozen=True)
class ByteTransformerConfig:
    """Sizes of a :class:`ByteTransformer`; the defaults are the ``prose-code`` model (~0.47M parameters)."""

    seq_len: int = 64      # longest input (learned positions); prose-code's window length
    width: int = 128       # model dimension
    layers: int = 2        # transformer blocks
    heads: int = 4         # attention heads; width must be a multiple
    mlp_ratio: int = 4     # hidden width of each block's MLP = mlp_ratio · width
    dropout: float = 0.0   # on attention weights and residual branches (off in eval mode)
    vocab: int = 256       # bytes

    def __post_init__(self) -> None:
        for name in ("seq_len", "width", "layers", "heads", "mlp_ratio", "vocab"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ByteTransformerConfig.{name} must be a positive integer, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"ByteTransformerConfig: width {self.width} is not a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ByteTransformerConfig.dropout must be in [0, 1), got {self.dropout}")


class Attention(nn.Module):
    """Causal multi-head self-attention, written out: one qkv projection, masked softmax, projection."""

    def __init__(self, config: ByteTransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.dropout = nn.Dropout(config.dropout)
        causal = torch.ones(config.seq_len, config.seq_len, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)  # rebuilt from the config, not saved

    def forward(self, h: Tensor) -> Tensor:
        n, t, width = h.shape
        q, k, v = self.qkv(h).view(n, t, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(width // self.heads)       # (n, heads, t, t)
        scores = scores.masked_fill(~self.causal[:t, :t], float("-inf"))
        attended = self.dropout(scores.softmax(-1)) @ v                          # (n, heads, t, d)
        return self.proj(attended.transpose(1, 2).reshape(n, t, width))


class Block(nn.Module):
    """Pre-norm transformer block: h + attn(ln(h)), then h + mlp(ln(h))."""

    def __init__(self, config: ByteTransformerConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.ln1 = nn.LayerNorm(config.width)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.width)
        self.fc = nn.Linear(config.width, hidden)
        self.out = nn.Linear(hidden, config.width)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.dropout(self.attn(self.ln1(h)))
        return h + self.dropout(self.out(F.gelu(self.fc(self.ln2(h)))))


class ByteTransformer(nn.Module):
    """Bytes (N, T) int64 → next-byte logits (N, T, vocab), T ≤ ``config.seq_len``; position t sees bytes ≤ t.

    Args:
        config: the sizes.
        seed: initialises the weights from a local generator (GPT-2's scheme: normal(0, 0.02), the
            projections into the residual stream scaled by 1/√(2·layers)); the global RNG is untouched.
    """

    def __init__(self, config: ByteTransformerConfig = ByteTransformerConfig(), *, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        with torch.random.fork_rng(devices=[]):  # the layers' own default init draws from the global RNG
            self.token = nn.Embedding(config.vocab, config.width)
            self.position = nn.Embedding(config.seq_len, config.width)
            self.dropout = nn.Dropout(config.dropout)
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
            self.norm = nn.LayerNorm(config.width)
            self.head = nn.Linear(config.width, config.vocab)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.layers)
        for name, p in self.named_parameters():
            if name.endswith("bias") or ".ln" in name or name.startswith("norm."):
                p.fill_(1.0 if name.endswith("weight") else 0.0)   # LayerNorm weight 1; biases 0
            else:
                std = residual_std if name.endswith(("attn.proj.weight", "out.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=generator) * std)

    def forward(self, x: Tensor) -> Tensor:
        n, t = x.shape
        if t > self.config.seq_len:
            raise ValueError(f"ByteTransformer: input of {t} positions, the model has {self.config.seq_len}")
        # positions looked up per sample (batch on dim 0), so the Fisher engine's Embedding rule applies
        positions = torch.arange(t, device=x.device).expand(n, t)
        h = self.dropout(self.token(x) + self.position(positions))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


def byte_transformer(seed: int = 0, **sizes) -> ByteTransformer:
    """The ``prose-code`` model: ``ByteTransformer(ByteTransformerConfig(**sizes), seed=seed)``.

    Example:
        >>> model = byte_transformer(width=64, layers=2)
        >>> sum(p.numel() for p in model.parameters())
        137216
        >>> byte_transformer(widht=64)
        Traceback (most recent call last):
        ...
        TypeError: unknown ByteTransformer size 'widht'; valid: seq_len, width, layers, heads, mlp_ratio, dropout, vocab
    """
    valid = ByteTransformerConfig.__dataclass_fields__
    for key in sizes:
        if key not in valid:
            raise TypeError(f"unknown ByteTransformer size {key!r}; valid: {', '.join(valid)}")
    return ByteTransformer(ByteTransformerConfig(**sizes), seed=seed)
