"""The byte-level transformer: causal, samples independent, seeded locally, vmap-able (per-sample gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from forgetless.byte_transformer import ByteTransformer, ByteTransformerConfig, byte_transformer

SMALL = dict(seq_len=12, width=16, layers=2, heads=2)


def test_outputs_depend_only_on_earlier_bytes():
    model = byte_transformer(**SMALL).eval()
    x = torch.randint(0, 256, (4, 12))
    z = model(x)
    for t in (0, 5, 11):
        changed = x.clone()
        changed[:, t:] = torch.randint(0, 256, changed[:, t:].shape)
        changed[:, t] = (x[:, t] + 1) % 256  # surely different at t
        z2 = model(changed)
        torch.testing.assert_close(z2[:, :t], z[:, :t], rtol=0, atol=1e-6)
        assert (z2[:, t] - z[:, t]).abs().max() > 1e-4   # position t sees byte t


def test_samples_are_independent_and_shorter_inputs_work():
    model = byte_transformer(**SMALL).eval()
    x = torch.randint(0, 256, (5, 12))
    torch.testing.assert_close(model(x[2:3]), model(x)[2:3], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x[:, :7]), model(x)[:, :7], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="input of 13 positions, the model has 12"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_initialisation_is_seeded_without_the_global_rng():
    state = torch.random.get_rng_state()
    a, b, c = byte_transformer(seed=3, **SMALL), byte_transformer(seed=3, **SMALL), byte_transformer(seed=4, **SMALL)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.fc.weight"], sc["blocks.0.fc.weight"])
    assert "blocks.0.attn.causal" not in sa   # the mask is rebuilt from the config, not saved
    assert torch.equal(sa["blocks.1.ln1.weight"], torch.ones(16)) and torch.equal(sa["head.bias"], torch.zeros(256))


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="width 10 is not a multiple of heads 4"):
        ByteTransformerConfig(width=10, heads=4)
    with pytest.raises(ValueError, match="layers must be a positive integer"):
        ByteTransformerConfig(layers=0)
    with pytest.raises(TypeError, match="unknown ByteTransformer size 'depth'"):
        byte_transformer(depth=3)


def test_torch_func_per_sample_gradients_equal_a_batch_size_one_loop():
    """The generic fallback of the Fisher engine runs the model under functional_call + vmap."""
    torch.manual_seed(0)
    model = ByteTransformer(ByteTransformerConfig(seq_len=6, width=8, layers=1, heads=2, vocab=256), seed=1).eval()
    x, y = torch.randint(0, 256, (3, 6)), torch.randint(0, 256, (3, 6))
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, xn, yn):
        z = functional_call(model, p, (xn.unsqueeze(0),))
        return F.cross_entropy(z.flatten(0, 1), yn)

    batched = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    for i in range(3):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]).flatten(0, 1), y[i]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(batched[name][i], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_every_parameter_has_a_layer_rule_and_the_fisher_is_per_sequence(monkeypatch):
    """The Fisher engine never needs torch.func on this model, and gives the per-sequence Fisher."""
    from forgetless import fisher_diagonal, per_sample

    def no_generic(*args, **kwargs):
        raise AssertionError("a parameter of ByteTransformer went through the torch.func path")

    monkeypatch.setattr(per_sample, "_generic_sums", no_generic)
    model = ByteTransformer(ByteTransformerConfig(seq_len=6, width=8, layers=2, heads=2), seed=2)
    x, y = torch.randint(0, 256, (5, 6)), torch.randint(0, 256, (5, 6))
    y[1, :2] = -100
    got = fisher_diagonal(model, (x, y), estimator="empirical")
    model.eval()
    for name, p in model.named_parameters():
        want = torch.zeros_like(p)
        for i in range(5):
            scored = y[i] != -100
            log_likelihood = -F.cross_entropy(model(x[i:i + 1])[0][scored], y[i][scored], reduction="sum")
            (g,) = torch.autograd.grad(log_likelihood, [p])
            want += g.square() / 5
        torch.testing.assert_close(got[name], want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-12, msg=name)
