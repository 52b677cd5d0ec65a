"""GaLore: projected Adam, against plain AdamW (full rank) and a reference step written here (low rank)."""

import math

import pytest
import torch

from strop.strategies.galore import GaLoreAdamW, compute_projection, project, project_back
from strop.train import checkpoint as ckpt

SHAPES = [(12, 20), (20, 12), (9, 9)]  # wide (left projection), tall (right), square; all odd-ish


def _grads(shape, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(steps)]


def _run(optimizer_cls, w0, grads, **kw):
    w = torch.nn.Parameter(w0.clone())
    opt = optimizer_cls(w, **kw)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    return w.detach(), opt


@pytest.mark.parametrize("shape", SHAPES)
def test_full_rank_equals_adamw(shape):
    w0 = torch.randn(shape)
    grads = _grads(shape, 4)
    expected, _ = _run(lambda p: torch.optim.AdamW([p], lr=1e-2, weight_decay=0.1), w0, grads)
    got, _ = _run(
        lambda p: GaLoreAdamW(
            [{"params": [p], "rank": min(shape), "scale": 0.25, "update_proj_gap": 1}], lr=1e-2, weight_decay=0.1
        ),
        w0,
        grads,
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES)
def test_projection_is_lossless_at_full_rank_and_orthonormal(shape):
    g = torch.randn(shape)
    p = compute_projection(g, min(shape))
    torch.testing.assert_close(project_back(project(g, p), p, g.shape), g, rtol=1e-4, atol=1e-5)
    r = 3
    p = compute_projection(g, r)
    torch.testing.assert_close(p.T @ p, torch.eye(r), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_low_rank_steps_match_reference(shape):
    """Two steps of Algorithm 1 of Zhao et al. 2024 written out by hand, projection refreshed at step 1."""
    rank, scale, lr, wd, (b1, b2), eps = 3, 0.25, 1e-2, 0.1, (0.9, 0.999), 1e-8
    w0 = torch.randn(shape)
    grads = _grads(shape, 2, seed=3)
    got, opt = _run(
        lambda p: GaLoreAdamW(
            [{"params": [p], "rank": rank, "scale": scale, "update_proj_gap": 10}], lr=lr, weight_decay=wd
        ),
        w0,
        grads,
    )
    w = w0.clone()
    u, _, vh = torch.linalg.svd(grads[0], full_matrices=False)
    left = shape[0] < shape[1]
    P = u[:, :rank] if left else vh[:rank].T
    m = v = 0
    for t, g in enumerate(grads, start=1):
        r = P.T @ g if left else g @ P
        m = b1 * m + (1 - b1) * r
        v = b2 * v + (1 - b2) * r * r
        n = (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
        w = w * (1 - lr * wd) - lr * scale * (P @ n if left else n @ P.T)
    torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["exp_avg"].shape == ((rank, shape[1]) if left else (shape[0], rank))


def test_projection_refreshes_every_T_steps():
    w = torch.nn.Parameter(torch.randn(10, 16))
    opt = GaLoreAdamW([{"params": [w], "rank": 2, "update_proj_gap": 3}], lr=1e-3)
    seen = []
    for g in _grads((10, 16), 7, seed=5):
        w.grad = g
        opt.step()
        seen.append(opt.state[w]["projection"].clone())
    same = [torch.equal(seen[i], seen[i - 1]) for i in range(1, 7)]
    assert same == [True, True, False, True, True, False]  # new SVD at steps 1, 4, 7


def test_state_survives_a_safetensors_checkpoint(tmp_path):
    """Resume through the loop's checkpoint format: the continued run equals the uninterrupted one."""
    from safetensors.torch import load_file, save_file

    w0, grads = torch.randn(10, 16), _grads((10, 16), 6, seed=7)
    make = lambda p: GaLoreAdamW([{"params": [p], "rank": 2, "update_proj_gap": 2, "scale": 0.5}], lr=1e-2)  # noqa: E731
    straight, _ = _run(make, w0, grads)
    half, opt = _run(make, w0, grads[:3])
    tensors, meta = ckpt._split_optimizer(opt.state_dict())
    save_file(tensors, tmp_path / "opt.safetensors")
    import json

    meta = json.loads(json.dumps(meta))  # JSON-able
    w = torch.nn.Parameter(half.clone())
    resumed = make(w)
    resumed.load_state_dict(ckpt._join_optimizer(load_file(tmp_path / "opt.safetensors"), meta))
    for g in grads[3:]:
        w.grad = g.clone()
        resumed.step()
    torch.testing.assert_close(w.detach(), straight, rtol=0, atol=0)


def test_strategy_projects_attention_and_mlp_only(prepared):
    run = prepared(adapter="galore", galore_rank=4, max_grad_norm=None)
    opt = run.strategy.build_optimizer(run.model, run.cfg, run.device)
    galore_group = next(g for g in opt.param_groups if g["rank"] is not None)
    names = {id(p): n for n, p in run.model.named_parameters()}
    projected = {names[id(p)] for p in galore_group["params"]}
    assert projected and all(("self_attn" in n or "mlp" in n) and n.endswith(".weight") for n in projected)
    assert len(projected) == 2 * 7  # q k v o gate up down, 2 layers
    assert math.isclose(galore_group["scale"], 0.25)
