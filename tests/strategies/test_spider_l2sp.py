"""SPIDER-style selective updating (the frozen share is the budget asked for) and L2-SP (the pull keeps
trained weights closer to the base than plain training does), through the real training loop."""

import json

import pytest
import torch
from safetensors.torch import load_file

from strop.config import load_config
from strop.errors import StropError
from strop.train import loop


@pytest.fixture(autouse=True)
def no_plot(monkeypatch):
    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_select_hand_worked():
    from strop.strategies.spider import select

    weight = torch.tensor([[0.1, -5.0, 0.2], [3.0, 0.05, -0.3]])  # |w0| ranks: 1 5 2 / 4 0 3
    task = torch.tensor([[9.0, 8.0, 0.0], [7.0, 1.0, 2.0]])  # T ranks:      5 4 0 / 3 1 2
    # rank(T) - rank(|w0|) (÷5): 4, -1, -2 / -1, 1, -1 → the two largest are (0,0) and (1,1)
    mask = select(weight, task, share=2 / 6)
    assert mask.tolist() == [[True, False, False], [False, True, False]]
    assert select(weight, task, share=1.0).all()


@pytest.mark.parametrize("share", [0.1, 0.35])
def test_spider_frozen_share_is_the_budget(make_config, tiny_model, share):
    cfg, base = load_config(
        make_config(adapter="spider", spider_update_share=share, spider_warmup_steps=2, max_steps=4, weight_decay=0.1)
    )
    out = loop.train(cfg, base)
    before, after = _weights(tiny_model), _weights(out)
    moved = total = 0
    for name, w0 in before.items():
        changed = after[name] != w0
        moved += int(changed.sum())
        total += w0.numel()
        assert changed.sum() <= max(1, round(share * w0.numel())), name  # the budget holds in every tensor
    frozen = 1 - moved / total
    assert frozen == pytest.approx(1 - share, abs=0.02)  # an element the budget allows may still not move
    assert frozen < 1 - share + 0.02 and moved > 0
    masks = load_file(str(out / "spider_mask.safetensors"))
    kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert kept == pytest.approx(share, abs=1e-3)
    assert all(not (after[n] != before[n])[~masks[n].bool()].any() for n in before if n in masks)


def test_spider_warmup_moves_nothing(prepared):
    run = prepared(adapter="spider", spider_warmup_steps=3)
    optimizer = run.strategy.build_optimizer(run.model, run.cfg, run.device)
    run.strategy.attach_optimizer(run.model, optimizer, run.cfg)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    for step in range(3):
        run.strategy.on_step_start(run.model, step, run.cfg)
        loop.train_step(run, step, optimizer, None, None)
    assert all(torch.equal(p, before[n]) for n, p in run.model.named_parameters())
    state = run.model._strop_spider
    assert state.recorded == 3 and all(t.sum() > 0 for n, t in state.task.items() if "layers" in n)


def test_spider_resume_after_warmup_without_masks_is_refused(prepared):
    run = prepared(adapter="spider", spider_warmup_steps=1)
    with pytest.raises(StropError, match="spider_mask.safetensors"):
        run.strategy.on_step_start(run.model, 2, run.cfg)


def _distance(folder, base) -> float:
    after, before = _weights(folder), _weights(base)
    return sum(float((after[n] - before[n]).pow(2).sum()) for n in before) ** 0.5


def test_l2sp_keeps_weights_closer_to_the_base(make_config, tiny_model, tmp_path):
    common = {"adapter": "full", "max_steps": 6, "learning_rate": 3e-3}
    plain, base = load_config(make_config(**common, output_dir=str(tmp_path / "plain")))
    pulled, _ = load_config(make_config(**common, l2sp_alpha=50.0, output_dir=str(tmp_path / "l2sp")))
    far, near = _distance(loop.train(plain, base), tiny_model), _distance(loop.train(pulled, base), tiny_model)
    assert 0 < near < 0.8 * far
    losses = [json.loads(line)["loss"] for line in (tmp_path / "l2sp" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_l2sp_gradient_is_alpha_times_offset(prepared):
    from strop.strategies.l2sp import install_l2sp

    run = prepared(adapter="full")
    param = next(run.model.parameters())
    optimizer = torch.optim.SGD([param], lr=1.0)
    install_l2sp(optimizer, alpha=0.5)
    with torch.no_grad():
        param.add_(1.0)  # w − w0 = 1 everywhere
    param.grad = torch.zeros_like(param)
    before = param.detach().clone()
    optimizer.step()  # SGD: w ← w − lr · (0 + 0.5 · 1)
    assert torch.allclose(param, before - 0.5)


@pytest.mark.parametrize("adapter", ["lora", "prefix_tuning"])
def test_l2sp_refused_where_the_base_is_frozen(prepared, adapter):
    with pytest.raises(StropError, match="l2sp_alpha: .*keeps the base frozen"):
        prepared(adapter=adapter, l2sp_alpha=0.1)


def test_l2sp_and_replay_run_with_dpo(make_config, tmp_path):
    pairs = [{"prompt": f"Say {i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(6)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    (tmp_path / "general.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[:3]))
    cfg, base = load_config(
        make_config(
            adapter="spider",
            spider_warmup_steps=1,
            rl="dpo",
            l2sp_alpha=0.5,
            datasets=[{"path": str(tmp_path / "pairs.jsonl"), "type": "dpo"}],
            replay={"path": str(tmp_path / "general.jsonl"), "type": "dpo", "share": 0.25},
            max_steps=2,
            micro_batch_size=2,
        )
    )
    out = loop.train(cfg, base)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert torch.isfinite(torch.tensor(record["loss"])) and (out / "spider_mask.safetensors").is_file()


def test_spider_trains_a_head_the_objective_adds_whole(prepared):
    run = prepared(adapter="spider", weight_decay=0.1)
    run.model.value_head = torch.nn.Linear(64, 1)  # as PPO attaches its value head after adapt
    optimizer = run.strategy.build_optimizer(run.model, run.cfg, run.device)
    groups = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert groups[id(run.model.value_head.weight)] == 0.1 and groups[id(run.model.value_head.bias)] == 0.0
    assert id(run.model.value_head.weight) not in {id(p) for p in run.model._strop_spider.params.values()}
