import torch

from forgetless.quadratic import merge_quadratic, quadratic_penalty


def test_quadratic_penalty_matches_closed_form():
    g = torch.Generator().manual_seed(1)
    params = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)}
    anchor = {k: torch.randn(v.shape, generator=g) for k, v in params.items()}
    weight = {k: torch.rand(v.shape, generator=g) for k, v in params.items()}
    expected = sum(float((weight[k] * (params[k] - anchor[k]) ** 2).sum()) for k in params)
    assert abs(float(quadratic_penalty(params, anchor, weight)) - expected) < 1e-5
    unweighted = sum(float(((params[k] - anchor[k]) ** 2).sum()) for k in params)
    assert abs(float(quadratic_penalty(params, anchor)) - unweighted) < 1e-5


def test_quadratic_penalty_gradient_is_2w_delta():
    p = torch.randn(6, requires_grad=True)
    a, w = torch.randn(6), torch.rand(6)
    quadratic_penalty({"p": p}, {"p": a}, {"p": w}).backward()
    torch.testing.assert_close(p.grad, 2 * w * (p.detach() - a))


def test_merging_many_terms_equals_sum_of_terms_for_any_theta():
    g = torch.Generator().manual_seed(2)
    terms = [(torch.rand(50, generator=g) * (t % 3), torch.randn(50, generator=g)) for t in range(7)]
    weight, anchor = terms[0]
    constant = torch.zeros(())
    for w, a in terms[1:]:
        weight, anchor, c = merge_quadratic(weight, anchor, w, a)
        constant = constant + c
    for _ in range(3):
        theta = torch.randn(50, generator=g, dtype=torch.float64)
        naive = sum(float((w * (theta - a) ** 2).sum()) for w, a in terms)
        merged = float((weight * (theta - anchor) ** 2).sum() + constant)
        assert abs(naive - merged) < 1e-4 * max(1.0, abs(naive))


def test_merge_keeps_new_anchor_where_total_weight_is_zero():
    w, m, c = merge_quadratic(torch.zeros(2), torch.tensor([5.0, 5.0]), torch.zeros(2), torch.tensor([1.0, 2.0]))
    assert torch.equal(m, torch.tensor([1.0, 2.0])) and float(c) == 0.0
