"""The one training loop: every objective with every update strategy goes through `train`.

    config → model + tokenizer → strategy applied → objective's data → micro-batches
      → objective.loss(model, batch) → backward → clip → AdamW → schedule → checkpoints, metrics
      → final adapter or model, loss curve, sample answers

The micro-batch stream is a pure function of (seed, step): epoch e visits the examples in the order of
a permutation seeded by seed + e, and optimizer step s consumes micro-batches [s·A, (s+1)·A). So a
resumed run needs only the step to find its data position, and a run killed and resumed ends with the
same weights as one that never stopped.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from strop.config import Config, config_to_yaml
from strop.errors import StropError
from strop.generate import answer_prompts
from strop.models import load_tokenizer, resolve_model_path
from strop.objectives import get_objective
from strop.strategies import get_strategy
from strop.train import checkpoint as ckpt
from strop.train.optim import autocast, autocast_dtype, build_scheduler
from strop.train.report import print_plan, print_samples, print_summary
from strop.train.tracking import Tracker, plot_losses


@dataclass
class Run:
    """Everything a training run is made of once loaded."""

    cfg: Config
    model: torch.nn.Module
    tokenizer: object
    strategy: object
    objective: object
    train_rows: list
    val_rows: list
    notes: list[str]
    device: torch.device
    model_path: str

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_rows) / self.cfg.micro_batch_size)

    @property
    def total_steps(self) -> int:
        if self.cfg.max_steps:
            return self.cfg.max_steps
        return max(1, math.ceil(self.cfg.num_epochs * self.micro_batches_per_epoch / self.cfg.gradient_accumulation_steps))


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def prepare(cfg: Config, base_dir: Path | None) -> Run:
    """Load tokenizer, data, model and strategy; every input error surfaces here, before any output."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    objective = get_objective(cfg.objective)
    strategy = get_strategy(cfg.strategy)
    model_path = resolve_model_path(cfg.base_model)
    tokenizer = load_tokenizer(cfg.tokenizer_config or model_path, cfg.trust_remote_code)
    train_rows, val_rows, report = objective.build_data(cfg, tokenizer, base_dir)
    device = pick_device()
    model = strategy.load(model_path, cfg, device)
    model.config.use_cache = False
    return Run(cfg, model, tokenizer, strategy, objective, train_rows, val_rows, report.notes, device, model_path)


def micro_batch_rows(run: Run, index: int) -> list:
    """Rows of global micro-batch `index` (epoch = index // micro-batches per epoch)."""
    per_epoch = run.micro_batches_per_epoch
    epoch, position = divmod(index, per_epoch)
    order = torch.randperm(len(run.train_rows), generator=torch.Generator().manual_seed(run.cfg.seed + epoch))
    size = run.cfg.micro_batch_size
    return [run.train_rows[i] for i in order[position * size:(position + 1) * size].tolist()]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_step(run: Run, step: int, optimizer, scaler, amp_dtype) -> dict[str, float]:
    """One optimizer step over A micro-batches, the loss normalised over all of them."""
    cfg, pad = run.cfg, run.tokenizer.pad_token_id
    first = step * cfg.gradient_accumulation_steps
    batches = [run.objective.collate(micro_batch_rows(run, first + i), pad) for i in range(cfg.gradient_accumulation_steps)]
    denominator = max(1, sum(run.objective.count(b) for b in batches))
    totals: dict[str, float] = {}
    tokens = 0
    for batch in batches:
        batch = _to(batch, run.device)
        mask = batch["attention_mask"]
        tokens += int(mask.sum()) if mask.dim() == 2 else batch["input_ids"].numel()
        with autocast(run.device, amp_dtype):
            loss, metrics = run.objective.loss(run.model, batch, denominator)
        (scaler.scale(loss) if scaler else loss).backward()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value
    if scaler:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clip = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
    totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    totals["tokens"] = tokens
    return totals


@torch.no_grad()
def evaluate(run: Run, amp_dtype) -> float:
    """Token-weighted loss over the validation rows, dropout off."""
    run.model.eval()
    pad, size = run.tokenizer.pad_token_id, run.cfg.micro_batch_size
    total, count = 0.0, 0
    for start in range(0, len(run.val_rows), size):
        batch = _to(run.objective.collate(run.val_rows[start:start + size], pad), run.device)
        n = run.objective.count(batch)
        with autocast(run.device, amp_dtype):
            loss, _ = run.objective.loss(run.model, batch, 1.0)
        total, count = total + float(loss), count + n
    run.model.train()
    return total / max(1, count)


def _prepare_output(output_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from, after refusing to clobber an earlier run by accident."""
    checkpoints = ckpt.list_checkpoints(output_dir)
    if resume:
        if not checkpoints:
            print(f"strop: no checkpoint in {output_dir}; starting from scratch")
        return checkpoints[-1] if checkpoints else None
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise StropError(f"output_dir {output_dir} is not empty: use --resume to continue that run, "
                             "--overwrite to replace it, or another --output-dir")
        shutil.rmtree(output_dir)
    return None


def _save_final(run: Run, output_dir: Path) -> None:
    """Write the final artifact into a temporary folder, then move it in (weights last)."""
    tmp = output_dir / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    run.strategy.save(run.model, run.tokenizer, tmp)
    (tmp / "strop_config.yml").write_text(config_to_yaml(run.cfg))
    files = sorted(tmp.iterdir(), key=lambda p: p.suffix == ".safetensors")
    for item in files:
        target = output_dir / item.name
        if target.is_dir():
            shutil.rmtree(target)
        item.replace(target)
    tmp.rmdir()


def train(cfg: Config, base_dir: Path | None = None, resume: bool = False, overwrite: bool = False,
          dry_run: bool = False) -> Path | None:
    run = prepare(cfg, base_dir)
    run.model = run.strategy.apply(run.model, cfg)
    run.strategy.upcast(run.model)
    print_plan(run)
    if dry_run:
        return None
    output_dir = Path(cfg.output_dir)
    start_from = _prepare_output(output_dir, resume, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    return _train_loop(run, output_dir, start_from)


def _train_loop(run: Run, output_dir: Path, start_from: Path | None) -> Path:
    cfg = run.cfg
    if cfg.gradient_checkpointing:
        run.strategy.base_model(run.model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    amp_dtype = autocast_dtype(cfg, run.device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    trainable = run.strategy.trainable_parameters(run.model)
    optimizer = run.strategy.build_optimizer(run.model, cfg, run.device)
    total = run.total_steps
    scheduler = build_scheduler(optimizer, cfg, total)
    step = 0
    if start_from is not None:
        step = ckpt.load_checkpoint(start_from, trainable, optimizer, scheduler)["step"]
        print(f"strop: resumed from {start_from} at step {step}")
    samples_before = _samples(run) if step == 0 else None
    run.objective.prepare_training(run)
    run.model.train()
    started, tokens_seen = time.perf_counter(), 0
    with Tracker(output_dir, total, step) as tracker:
        while step < total:
            run.strategy.on_step_start(run.model, step, cfg)
            metrics = train_step(run, step, optimizer, scaler, amp_dtype)
            metrics["lr"] = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            tokens_seen += metrics.pop("tokens")
            metrics["tokens_per_s"] = tokens_seen / (time.perf_counter() - started)
            metrics["epoch"] = step * cfg.gradient_accumulation_steps / run.micro_batches_per_epoch
            if run.val_rows and cfg.eval_steps and (step % cfg.eval_steps == 0 or step == total):
                metrics["eval_loss"] = evaluate(run, amp_dtype)
            if step % cfg.logging_steps == 0 or step == total or "eval_loss" in metrics:
                tracker.log(step, metrics)
            tracker.advance(step)
            if cfg.save_steps and step % cfg.save_steps == 0 and step < total:
                ckpt.save_checkpoint(output_dir, step, trainable, optimizer, scheduler, {}, cfg.save_total_limit)
    final_eval = evaluate(run, amp_dtype) if run.val_rows else None
    if cfg.save_steps:
        ckpt.save_checkpoint(output_dir, step, trainable, optimizer, scheduler, {}, cfg.save_total_limit)
    _save_final(run, output_dir)
    plot = plot_losses(output_dir / "metrics.jsonl", output_dir / "loss.png")
    if samples_before is not None:
        print_samples(cfg.sample_prompts, samples_before, _samples(run))
    print_summary(run, output_dir, final_eval, plot)
    return output_dir


def _samples(run: Run) -> list[str] | None:
    if not run.cfg.sample_prompts:
        return None
    return answer_prompts(run.model, run.tokenizer, run.cfg.sample_prompts, run.cfg.sample_max_new_tokens)
