"""`strop pipeline PIPELINE.yml`: the survey's reference pipeline as resumable stages.

    SFT (LoRA/QLoRA) → preference alignment (ORPO/DPO) → optional GRPO → merge-lora
      → optional merge with other experts → GGUF quantization → Ollama Modelfile

Each stage is an ordinary artifact-producing step (a training config, a merge config, an export), and
each training stage starts from the model the previous stage produced: an adapter is merged into its
base first, so the next stage trains a plain model. A stage that finished writes `stage.json` into its
folder and is skipped on a re-run, so a pipeline killed halfway resumes at the stage it was in. At the
end `report.md` lists every stage with its metrics, loss curve, sample answers and artifact paths, and
`runs.html` (`strop report`) compares the training stages' runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from strop import manifest
from strop.errors import StropError
from strop.safe_io import remove_entry, write_text


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Folder name of the stage inside output_dir.")
    kind: Literal["train", "merge", "export"] = Field(
        description="train (a training config), merge (a merge config) or export (GGUF)."
    )
    config: str | None = Field(None, description="Training or merge YAML, relative to the pipeline file.")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides of the stage config's keys.")
    optional: bool = Field(False, description="Skip, with a note, when this strop lacks the stage's objective.")
    gguf: str = Field("q4_k_m", description="export: GGUF type (f16, bf16, q8_0, q4_0, q4_k_m, ...).")
    modelfile: bool = Field(True, description="export: also write an Ollama Modelfile.")


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field("smollm2-135m-instruct", description="Model the first training stage starts from.")
    output_dir: str = Field("outputs/pipeline", description="One folder per stage, plus report.md.")
    sample_prompts: list[str] = Field(
        default_factory=list, description="Answered by every stage's model for the report."
    )
    sample_max_new_tokens: int = Field(48, gt=0)
    stages: list[Stage]


def load_pipeline(path: Path) -> Pipeline:
    if not path.is_file():
        raise StropError(f"pipeline file not found: {path}")
    try:
        spec = Pipeline.model_validate(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as err:
        raise StropError(f"{path}: not valid YAML: {err}") from err
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise StropError(f"{path}: invalid pipeline: {details}") from err
    for stage in spec.stages:  # every stage's file exists before the first stage spends any time
        if stage.config and not (path.resolve().parent / stage.config).is_file():
            raise StropError(
                f"{path}: stage {stage.name}: config file not found: {stage.config} "
                f"(paths are relative to the pipeline file)"
            )
    return spec


def _train_stage(stage: Stage, base_dir: Path, model: str, folder: Path) -> tuple[str, dict[str, Any]]:
    from strop.config import load_config
    from strop.objectives import OBJECTIVES
    from strop.train.loop import train

    if not stage.config:
        raise StropError(f"stage {stage.name}: a train stage needs `config`")
    raw = yaml.safe_load((base_dir / stage.config).read_text()) or {}
    objective = {**raw, **stage.set}.get("rl")
    if objective and objective not in OBJECTIVES:
        if stage.optional:
            return model, {"skipped": f"objective '{objective}' has not landed in this strop version"}
        raise StropError(f"stage {stage.name}: objective '{objective}' is not available in this strop version")
    overrides = [f"{k}={json.dumps(v)}" for k, v in stage.set.items()]
    overrides += [f"base_model={model}", f"output_dir={folder / 'train'}"]
    cfg, cfg_dir = load_config(base_dir / stage.config, overrides)
    out = train(cfg, cfg_dir, overwrite=True)
    assert out is not None  # train returns None only for a dry run
    summary = _last_metrics(out / "metrics.jsonl")
    if (out / "adapter_config.json").is_file():
        from strop.export.merge_lora import merge_lora
        from strop.models import resolve_model_path

        merged = merge_lora(resolve_model_path(model), out, folder / "merged")
        return str(merged), {**summary, "adapter": str(out), "merged": str(merged)}
    return str(out), {**summary, "model": str(out)}


def _last_metrics(path: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    last = {k: v for k, v in records[-1].items() if isinstance(v, (int, float))} if records else {}
    evals = {key: [r[key] for r in records if key in r] for key in ("eval_loss", "eval_reward")}
    return {
        "final": last,
        **{key: values[-1] for key, values in evals.items() if values},
        "loss_curve": str(path.parent / "loss.png"),
    }


def _merge_stage(stage: Stage, base_dir: Path, model: str, folder: Path) -> tuple[str, dict[str, Any]]:
    from strop.merge import run_merge

    if not stage.config:
        raise StropError(f"stage {stage.name}: a merge stage needs `config` (a merge YAML)")
    text = (base_dir / stage.config).read_text().replace("{previous}", model)
    resolved = folder / "merge.yml"
    folder.mkdir(parents=True, exist_ok=True)
    resolved.write_text(text)
    out = run_merge(resolved, folder / "merged", overwrite=True, progress=True)
    return str(out), {"model": str(out)}


def _export_stage(stage: Stage, base_dir: Path, model: str, folder: Path) -> tuple[str, dict[str, Any]]:
    from strop.export.bundle import export_model

    gguf, modelfile = export_model(Path(model), stage.gguf, folder / f"model-{stage.gguf}.gguf", stage.modelfile)
    info = {"gguf": str(gguf.path), "size_bytes": gguf.size_bytes, "seconds": round(gguf.seconds, 1)}
    if modelfile:
        info["modelfile"] = str(modelfile)
    return model, info


RUNNERS = {"train": _train_stage, "merge": _merge_stage, "export": _export_stage}


def _samples(model: str, prompts: list[str], max_new_tokens: int) -> list[str]:
    from strop.models.generate import answer_prompts
    from strop.models.saved import load_for_chat

    loaded, tokenizer = load_for_chat(model)
    return answer_prompts(loaded, tokenizer, prompts, max_new_tokens)


def fresh_stage_folder(out: Path, folder: Path) -> None:
    """Empty a stage's folder for a (re)run. Only a folder this pipeline made is deleted (claimed in
    the output folder's manifest, strop/manifest.py): a same-named folder of the user's is refused."""
    exists = folder.exists() or folder.is_symlink()
    if exists and folder.name not in (manifest.read(out) or []):
        raise StropError(f"{folder} exists and strop did not write it; move it away or rename the stage")
    manifest.claim(folder)
    if exists:
        remove_entry(folder)
    folder.mkdir(parents=True)


def run_pipeline(path: Path) -> Path:
    spec = load_pipeline(path)
    base_dir, out = path.resolve().parent, Path(spec.output_dir)
    manifest.start(out)
    model = spec.base_model
    results: list[dict[str, Any]] = []
    if spec.sample_prompts:
        results.append(
            {
                "name": "base",
                "model": model,
                "samples": _samples(model, spec.sample_prompts, spec.sample_max_new_tokens),
            }
        )
    for stage in spec.stages:
        folder, done = out / stage.name, out / stage.name / "stage.json"
        if done.is_file():
            record = json.loads(done.read_text())
            print(f"strop pipeline: stage {stage.name} already done; skipping")
        else:
            print(f"strop pipeline: stage {stage.name} ({stage.kind})")
            fresh_stage_folder(out, folder)
            started = time.perf_counter()
            new_model, info = RUNNERS[stage.kind](stage, base_dir, model, folder)
            record = {
                "name": stage.name,
                "kind": stage.kind,
                "model": new_model,
                "seconds": round(time.perf_counter() - started, 1),
                **info,
            }
            if spec.sample_prompts and stage.kind != "export" and "skipped" not in info:
                record["samples"] = _samples(new_model, spec.sample_prompts, spec.sample_max_new_tokens)
            done.write_text(json.dumps(record, indent=1))
        model = record["model"]
        results.append(record)
    report = write_report(out, spec, results)
    runs = [
        Path(r["adapter"] if "adapter" in r else r["model"])
        for r in results
        if r.get("kind") == "train" and "skipped" not in r
    ]
    if runs:
        from strop.evaluation.report import write_report as write_run_report

        write_run_report(runs, out / "runs.html", f"strop pipeline: {out}")
    print(f"strop pipeline: done. report: {report}" + (f", runs compared in {out / 'runs.html'}" if runs else ""))
    return report


def write_report(out: Path, spec: Pipeline, results: list[dict[str, Any]]) -> Path:
    lines = [
        "# strop pipeline report",
        "",
        f"Base model: `{spec.base_model}`",
        "",
        "| stage | kind | seconds | result |",
        "|---|---|---|---|",
    ]
    for r in results:
        if r["name"] == "base":
            continue
        result = r.get("skipped") or ", ".join(
            f"{k}: {v:.4g}" for k, v in r.get("final", {}).items() if k in ("loss", "reward", "step")
        )
        for key in ("eval_loss", "eval_reward"):
            if key in r:
                result += f", {key}: {r[key]:.4g}"
        if "gguf" in r:
            result = f"`{r['gguf']}` ({r['size_bytes'] / 2**20:.1f} MiB)"
        lines.append(f"| {r['name']} | {r.get('kind', '')} | {r.get('seconds', '')} | {result} |")
    lines += ["", "## Loss curves", ""]
    lines += [f"- {r['name']}: ![{r['name']}]({Path(r['loss_curve']).resolve()})" for r in results if "loss_curve" in r]
    if spec.sample_prompts:
        lines += ["", "## Sample answers", ""]
        for i, prompt in enumerate(spec.sample_prompts):
            lines += [f"**Prompt:** {prompt}", ""]
            lines += [f"- *{r['name']}*: {r['samples'][i]}" for r in results if "samples" in r]
            lines.append("")
    lines += ["", "## Artifacts", ""]
    for r in results:
        produced: list[str] = [k for k in ("adapter", "merged", "gguf", "modelfile") if k in r]
        if r.get("kind") == "merge" or (r.get("kind") == "train" and "merged" not in r and "skipped" not in r):
            produced.append("model")
        lines += [f"- {r['name']} {key}: `{r[key]}`" for key in produced]
    path = out / "report.md"
    manifest.claim(path)
    return write_text(path, "\n".join(lines) + "\n")
