"""Each merge method against small hand-worked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from strop.errors import StropError
from strop.merge.methods import METHODS, MergeInputs
from strop.merge.methods.dare import drop_and_rescale, model_generator
from strop.merge.methods.slerp import slerp_tensors
from strop.merge.methods.ties import elect_and_merge, top_k_mask, trim_top_k

T = torch.tensor


def run(method: str, tensors, base=None, weights=None, densities=None, seed=0, name="w", **params):
    """Call a registered method the way the engine does, with its defaults filled in."""
    spec = METHODS[method]
    per_model = []
    for k in range(len(tensors)):
        own = dict(spec.model_params)
        if weights is not None:
            own["weight"] = weights[k]
        if densities is not None:
            own["density"] = densities[k]
        per_model.append(own)
    inputs = MergeInputs(
        tensors=[t.clone() for t in tensors],  # methods may overwrite their inputs
        base=base,
        model_params=per_model,
        params={**spec.global_params, **params},
        seed=seed,
        name=name,
    )
    return spec.merge(inputs)


def test_registry_holds_expected_methods():
    assert set(METHODS) == {"linear", "model_soup", "slerp", "task_arithmetic", "ties", "dare_linear", "dare_ties"}
    for name, method in METHODS.items():
        assert method.name == name
        assert method.merge.__doc__ and method.summary


def test_every_method_module_documents_its_formula():
    import importlib

    for module in ("linear", "slerp", "task_arithmetic", "ties", "dare"):
        doc = importlib.import_module(f"strop.merge.methods.{module}").__doc__
        assert "arxiv.org" in doc or "Shoemake" in doc
        assert "θ" in doc


def test_linear_weighted_normalised_on_odd_shape():
    a = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = T([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    out = run("linear", [a, b], weights=[1.0, 3.0])
    assert torch.allclose(out, T([[2.5, 2.0, 1.5], [1.0, 2.0, 3.0]]))
    raw = run("linear", [a, b], weights=[1.0, 3.0], normalize=False)
    assert torch.allclose(raw, T([[10.0, 8.0, 6.0], [4.0, 8.0, 12.0]]))


def test_linear_zero_weight_sum_is_a_user_error():
    with pytest.raises(StropError, match="sum to zero"):
        run("linear", [T([1.0]), T([2.0])], weights=[1.0, -1.0])


def test_model_soup_is_uniform_mean():
    tensors = [T([0.0, 3.0, 6.0, 9.0, 12.0]) + i for i in range(3)]
    assert torch.allclose(run("model_soup", tensors), T([1.0, 4.0, 7.0, 10.0, 13.0]))


def test_slerp_keeps_norm_of_orthogonal_vectors():
    out = run("slerp", [T([1.0, 0.0]), T([0.0, 1.0])], t=0.5)
    half = math.sqrt(0.5)
    assert torch.allclose(out, T([half, half]))  # a linear average would give [0.5, 0.5]
    out = run("slerp", [T([1.0, 0.0]), T([0.0, 1.0])], t=1 / 3)
    assert torch.allclose(out, T([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


def test_slerp_endpoints_on_odd_shape():
    gen = torch.Generator().manual_seed(0)
    v0, v1 = torch.randn(3, 5, 7, generator=gen), torch.randn(3, 5, 7, generator=gen)
    assert torch.allclose(slerp_tensors(0.0, v0, v1), v0, atol=1e-6)
    assert torch.allclose(slerp_tensors(1.0, v0, v1), v1, atol=1e-6)


def test_slerp_falls_back_to_linear_when_parallel():
    v0 = T([1.0, 2.0, 3.0])
    assert torch.allclose(slerp_tensors(0.25, v0, 2 * v0), T([1.25, 2.5, 3.75]))
    assert torch.allclose(slerp_tensors(0.5, torch.zeros(3), v0), 0.5 * v0)


def test_slerp_needs_two_models():
    with pytest.raises(StropError, match="exactly two"):
        run("slerp", [T([1.0])] * 3, t=0.5)


def test_task_arithmetic_with_negative_weight_and_lambda():
    base = T([1.0, 1.0, 1.0])
    a, b = T([2.0, 0.0, 1.0]), T([1.0, 3.0, 1.0])  # task vectors [1, -1, 0] and [0, 2, 0]
    assert torch.allclose(run("task_arithmetic", [a, b], base=base, weights=[1.0, -0.5]), T([2.0, -1.0, 1.0]))
    out = run("task_arithmetic", [a, b], base=base, weights=[1.0, -0.5], **{"lambda": 2.0})
    assert torch.allclose(out, T([3.0, -3.0, 1.0]))
    assert torch.equal(run("task_arithmetic", [a], base=base), a)


def test_trim_top_k_keeps_largest_magnitudes():
    delta = T([[3.0, -1.0, 0.5], [-2.0, 0.1, 0.0]])
    assert torch.equal(trim_top_k(delta.clone(), 0.5), T([[3.0, -1.0, 0.0], [-2.0, 0.0, 0.0]]))
    assert torch.equal(trim_top_k(delta.clone(), 0.0), torch.zeros(2, 3))
    assert torch.equal(trim_top_k(delta.clone(), 0.01), T([[3.0, 0, 0], [0, 0, 0]]))  # at least one kept
    assert trim_top_k(delta, 1.0) is delta


def test_top_k_mask_matches_topk_and_breaks_ties_by_position():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(10_007, generator=gen).abs()
    for k in (1, 17, 5000, 10_006, 10_007):
        expected = torch.zeros(values.numel(), dtype=torch.bool)
        expected[torch.topk(values, k).indices] = True
        assert torch.equal(top_k_mask(values, k), expected), k
    ties = T([1.0, 2.0, 1.0, 1.0, 0.0, 2.0])
    assert top_k_mask(ties, 4).tolist() == [True, True, True, False, False, True]
    assert top_k_mask(torch.zeros(4), 2).tolist() == [True, True, False, False]


TIES_DELTAS = [
    T([3.0, -1.0, 0.5, -2.0, 0.1]),
    T([1.0, 2.0, -0.4, -3.0, 0.2]),
    T([-2.0, 1.5, 0.3, 1.0, -0.05]),
]


def test_ties_hand_worked():
    # density 0.6 of 5 keeps 3 per model:
    #   [3, -1, 0, -2, 0], [1, 2, 0, -3, 0], [-2, 1.5, 0, 1, 0]
    # summed mass [2, 2.5, 0, -4, 0] elects signs [+, +, + (tie), -, +];
    # disjoint means: (3+1)/2, (2+1.5)/2, nothing, (-2-3)/2, nothing.
    base = torch.ones(5)
    out = run("ties", [base + d for d in TIES_DELTAS], base=base, densities=[0.6] * 3)
    assert torch.allclose(out, base + T([2.0, 1.75, 0.0, -2.5, 0.0]))
    raw = run("ties", [base + d for d in TIES_DELTAS], base=base, densities=[0.6] * 3, normalize=False)
    assert torch.allclose(raw, base + T([4.0, 3.5, 0.0, -5.0, 0.0]))


def test_ties_weights_vote_and_scale():
    # weights 1 and 3: weighted deltas [2, -1] and [-3, 3]; mass [-1, 2] elects [-, +];
    # only model 2 agrees in column 0, only model 2 in column 1: -3/3 and 3/3.
    out = elect_and_merge([T([2.0, -1.0]), T([-1.0, 1.0])], [1.0, 3.0], normalize=True)
    assert torch.allclose(out, T([-1.0, 1.0]))


def test_drop_and_rescale_is_unbiased_and_seeded():
    ones = torch.ones(200, 301)
    dropped = drop_and_rescale(ones.clone(), 0.3, model_generator(7, "w", 0))
    assert torch.allclose(dropped.unique(), T([0.0, 1 / 0.3]))
    assert abs(dropped.mean().item() - 1.0) < 0.05
    assert abs((dropped != 0).float().mean().item() - 0.3) < 0.01
    again = drop_and_rescale(ones.clone(), 0.3, model_generator(7, "w", 0))
    assert torch.equal(dropped, again)
    assert not torch.equal(dropped, drop_and_rescale(ones.clone(), 0.3, model_generator(8, "w", 0)))
    assert not torch.equal(dropped, drop_and_rescale(ones.clone(), 0.3, model_generator(7, "w", 1)))


def test_dare_with_density_one_equals_undropped_methods():
    base = torch.ones(5)
    tensors = [base + d for d in TIES_DELTAS]
    weights = [0.5, 1.0, -0.25]
    linear = run("task_arithmetic", tensors, base=base, weights=weights)
    assert torch.equal(run("dare_linear", tensors, base=base, weights=weights, densities=[1.0] * 3), linear)
    ties = run("ties", tensors, base=base, weights=weights, densities=[1.0] * 3, normalize=False)
    assert torch.equal(run("dare_ties", tensors, base=base, weights=weights, densities=[1.0] * 3), ties)


def test_dare_defaults_are_mergekits():
    """mergekit configs carry over unchanged: no normalisation and rescaled survivors unless told otherwise."""
    for method in ("dare_linear", "dare_ties"):
        assert METHODS[method].global_params["normalize"] is False
        assert METHODS[method].global_params["rescale"] is True


def test_dare_without_rescale_keeps_survivors_as_they_were():
    base, tuned = torch.zeros(64), torch.arange(1.0, 65.0)
    out = run("dare_linear", [tuned], base=base, densities=[0.5], seed=11, name="x", rescale=False)
    kept = out != 0
    assert torch.equal(out[kept], tuned[kept])
    assert 0 < kept.sum() < 64


def test_dare_seeded_reproducible_and_seed_sensitive():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(7, 9, generator=gen)
    tensors = [base + torch.randn(7, 9, generator=gen) for _ in range(2)]
    for method in ("dare_linear", "dare_ties"):
        first = run(method, tensors, base=base, densities=[0.5, 0.5], seed=3)
        assert torch.equal(first, run(method, tensors, base=base, densities=[0.5, 0.5], seed=3))
        assert not torch.equal(first, run(method, tensors, base=base, densities=[0.5, 0.5], seed=4))


def test_dare_linear_hand_worked_drop():
    # One model, density 0.5: surviving task-vector entries are doubled, dropped ones vanish.
    base, tuned = torch.zeros(64), torch.arange(1.0, 65.0)
    out = run("dare_linear", [tuned], base=base, densities=[0.5], seed=11, name="x")
    kept = out != 0
    assert torch.equal(out[kept], 2 * tuned[kept])
    assert 0 < kept.sum() < 64
