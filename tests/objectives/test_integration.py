"""DPO with LoRA on the real SmolLM2-135M-Instruct learns a preference it does not start with."""

import pytest

pytestmark = pytest.mark.integration


def test_dpo_lora_smollm2_gains_held_out_preference_accuracy(tmp_path):
    from strop.config import load_config
    from strop.examples.preference.measure import HERE, accuracies, held_out_rows, pair_logps
    from strop.train.loop import prepare, train

    try:
        cfg, base = load_config(
            HERE / "dpo.yml", [f"output_dir={tmp_path / 'dpo'}", "max_steps=12", "sample_prompts=null"]
        )
        run = prepare(cfg, base)
    except Exception as err:  # noqa: BLE001 - the default model is not installed here
        pytest.skip(f"SmolLM2 not available: {err}")
    rows = held_out_rows(cfg, run.tokenizer)
    before = pair_logps(run.model, run.tokenizer, rows)
    del run
    out = train(cfg, base)

    from peft import PeftModel

    from strop.models import load_model, load_tokenizer, resolve_model_path

    tuned = PeftModel.from_pretrained(load_model(resolve_model_path(cfg.base_model)), str(out))
    after = pair_logps(tuned, load_tokenizer(str(out)), rows)
    acc = accuracies(before, after)
    assert acc["implicit_reward_acc"] >= 0.8, acc
    assert acc["logp_margin_acc_after"] >= acc["logp_margin_acc_before"] + 0.2, acc
    assert acc["mean_margin_after"] > acc["mean_margin_before"] + 1.0, acc
