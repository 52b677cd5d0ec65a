"""hub_model_id: `strop train` pushes the finished run to a Hub endpoint (a local fake one, tests/train/
_fake_hub.py, reached through HF_ENDPOINT exactly as the real Hub would be), and fails before training
when it could not push, or after it with the local output untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from _fake_hub import ORGS, TOKEN, USER, FakeHub

from strop import manifest
from strop.cli import main
from strop.config import load_config
from strop.errors import StropError
from strop.train import hub as hub_push

REPO = f"{ORGS[0]}/tiny-lora"


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """The fake Hub, with HF_ENDPOINT and HF_TOKEN pointing at it. It speaks git-LFS's basic transfer,
    not Xet, so the client's Xet path is switched off; offline mode (if the environment sets it) would
    block even 127.0.0.1. No stored login token is read."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_train_pushes_the_final_artifact(fake_hub, make_config, tmp_path, tiny_model, capsys):
    config = make_config(hub_model_id=REPO, max_steps=1, save_steps=1)
    code, out = run_cli(capsys, "train", str(config))
    assert code == 0, out
    assert "push to hub" in out and f"pushed to {fake_hub.url}/{REPO}/commit/" in out
    local = tmp_path / "out"
    pushed = fake_hub.files(REPO)
    weights = sorted(p.name for p in local.glob("*.safetensors"))
    assert weights == ["adapter_model.safetensors"]
    for name in [*weights, "adapter_config.json", "tokenizer.json", "strop_config.yml", "metrics.jsonl"]:
        assert pushed[name] == (local / name).read_bytes(), name
    assert (local / "checkpoint-1").is_dir()  # written, but hub_strategy end pushes no checkpoint
    assert not any(name.startswith("checkpoint-") or name == manifest.MANIFEST for name in pushed)
    assert fake_hub.state.repos[REPO]["private"]  # Axolotl's default: a private repository
    # PEFT's card names the base model's local folder, which the Hub refuses: pushed without it
    assert str(tiny_model) in (local / "README.md").read_text()
    assert b"base_model" not in pushed["README.md"] and b"library_name: peft" in pushed["README.md"]


def test_checkpoint_strategy_branch_and_public_repo(fake_hub, make_config, tmp_path, capsys):
    config = make_config(
        hub_model_id=REPO,
        hub_strategy="checkpoint",
        hub_revision="run-1",
        hub_private_repo=False,
        max_steps=2,
        save_steps=1,
    )
    code, out = run_cli(capsys, "train", str(config))
    assert code == 0, out
    pushed = fake_hub.files(REPO, "run-1")
    newest = tmp_path / "out" / "checkpoint-2"
    for path in newest.iterdir():
        assert pushed[f"last-checkpoint/{path.name}"] == path.read_bytes()
    assert pushed["adapter_model.safetensors"] == (tmp_path / "out" / "adapter_model.safetensors").read_bytes()
    assert not fake_hub.files(REPO) and not fake_hub.state.repos[REPO]["private"]


def test_failed_push_keeps_the_local_output(fake_hub, make_config, tmp_path, capsys):
    fake_hub.state.fail.add("commit")
    code, out = run_cli(capsys, "train", str(make_config(hub_model_id=REPO, max_steps=1)))
    local = tmp_path / "out"
    assert code == 2
    assert f"push to the Hub failed: {REPO} at {fake_hub.url}" in out and "500" in out
    assert f"the local output is complete at {local.resolve()}" in " ".join(out.split())
    assert (local / "adapter_model.safetensors").is_file() and not manifest.foreign(local)
    assert {"adapter_model.safetensors", "metrics.jsonl"} <= set(manifest.read(local) or [])


def test_no_token_fails_before_training(fake_hub, make_config, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    code, out = run_cli(capsys, "train", str(make_config(hub_model_id=REPO)))
    assert code == 2 and f"hub_model_id {REPO}: no Hugging Face token" in out
    assert not (tmp_path / "out").exists() and fake_hub.state.calls == []


def test_rejected_token_or_foreign_namespace_fails_before_training(
    fake_hub, make_config, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    code, out = run_cli(capsys, "train", str(make_config(hub_model_id=REPO)))
    assert code == 2 and f"hub_model_id {REPO}: whoami at {fake_hub.url} failed: Invalid user token" in out
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out = run_cli(capsys, "train", str(make_config(hub_model_id="someone-else/model")))
    assert code == 2 and f"the token belongs to {USER!r}, who is not in 'someone-else'" in out
    assert not (tmp_path / "out").exists() and not fake_hub.state.repos


def test_dry_run_shows_the_push(fake_hub, make_config, capsys):
    code, out = run_cli(
        capsys, "train", str(make_config(hub_model_id="tiny", hub_strategy="all_checkpoints")), "--dry-run"
    )
    assert code == 0 and "push to hub" in out and "tiny (private, with every checkpoint)" in out
    assert [c.split("?")[0] for c in fake_hub.state.calls] == ["GET /api/whoami-v2"] and not fake_hub.state.repos


def _cfg(tmp_path: Path, **keys):
    path = tmp_path / "c.yml"
    import yaml

    path.write_text(yaml.safe_dump({"datasets": [{"path": "d.jsonl", "type": "alpaca"}], **keys}))
    return load_config(path)[0]


def test_hub_keys(tmp_path):
    assert hub_push.target(_cfg(tmp_path)) is None
    assert hub_push.target(_cfg(tmp_path, hub_model_id="me/m", push_to_hub=False)) is None
    assert hub_push.target(_cfg(tmp_path, hub_model_id="me/m")) == hub_push.HubTarget("me/m", True, None, "end")
    with pytest.raises(StropError, match="push_to_hub: true needs hub_model_id"):
        hub_push.target(_cfg(tmp_path, push_to_hub=True))
    with pytest.raises(StropError, match="hub_model_id: 'me/two/slashes' is not a Hub repository id"):
        hub_push.target(_cfg(tmp_path, hub_model_id="me/two/slashes"))
    with pytest.raises(StropError, match="hub_strategy"):
        _cfg(tmp_path, hub_model_id="me/m", hub_strategy="sometimes")


def test_model_card_names_the_hub_model(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "---\nbase_model: /cache/strop/smollm2\nlibrary_name: peft\ntags:\n- base_model:adapter:/cache/strop/smollm2\n"
        "- lora\n---\n\n# Model Card\n"
    )
    card = hub_push.model_card(readme, "smollm2-135m-instruct").decode()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "base_model:adapter:HuggingFaceTB/SmolLM2-135M-Instruct" in card and "/cache" not in card
    assert "# Model Card" in card
    readme.write_text("---\nbase_model: Qwen/Qwen2.5-0.5B\nlibrary_name: peft\n---\n\ntext\n")
    assert hub_push.model_card(readme, "Qwen/Qwen2.5-0.5B") == readme.read_bytes()
