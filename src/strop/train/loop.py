"""The one training loop: every objective with every update strategy goes through `train`.

    config → model + tokenizer → strategy applied → objective's data → micro-batches
      → objective.loss(model, batch) → backward → clip → AdamW → schedule → checkpoints, metrics
      → final adapter or model, loss curve, sample answers

The micro-batch stream is a pure function of (seed, step): epoch e visits the examples in the order of
a permutation seeded by seed + e, and optimizer step s consumes micro-batches [s·A, (s+1)·A). So a
resumed run needs only the step to find its data position, and a run killed and resumed ends with the
same weights as one that never stopped. Under torchrun (runtime/distributed.py) a global micro-batch is
micro_batch_size × N rows of that same order and rank r trains on its r-th slice, so N processes with
micro_batch_size m make the same updates as one process with N·m.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from strop import manifest
from strop.config import Config, config_to_yaml
from strop.data import mixture, replay
from strop.data.packing import drop_capacity, real_tokens
from strop.evaluation import training as training_evaluation
from strop.kernels import packed_attention
from strop.models import load_tokenizer, resolve_model_path
from strop.models.generate import answer_prompts
from strop.models.tokens import apply_tokens, fit_embeddings
from strop.moe import monitor as moe_monitor
from strop.objectives import Objective, objective_for
from strop.objectives.base import FILLER
from strop.rl.engine import RolloutEngine
from strop.runtime import distributed
from strop.runtime.precision import autocast, autocast_dtype, bf16_fallback_note
from strop.safe_io import disk_errors, temp_folder
from strop.strategies import Strategy, get_strategy
from strop.train import checkpoint as ckpt
from strop.train import external_trackers, hub, run_keys
from strop.train import output_dir as outputs
from strop.train.optim import build_scheduler
from strop.train.report import print_plan, print_samples, print_summary
from strop.train.rows import DatasetRows, RowSource
from strop.train.tracking import NullTracker, Tracker, plot_losses


@dataclass
class Run:
    """Everything a training run is made of once loaded."""

    cfg: Config
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    strategy: Strategy
    objective: Objective
    rows: RowSource
    train_rows: list
    val_rows: list
    notes: list[str]
    device: torch.device
    model_path: str
    tracker: Tracker | NullTracker | None = None  # set while training: where objectives print tables
    evaluators: training_evaluation.TrainingEvaluation | None = None  # the config's evaluators
    router: moe_monitor.RouterMonitor | None = None  # an MoE model's router losses and health, else None
    rows_seen: dict[str, float] = field(default_factory=dict)  # examples trained on so far, per dataset

    @property
    def global_micro_batch(self) -> int:
        """Rows of one micro-batch over all processes."""
        return self.cfg.micro_batch_size * distributed.world_size()

    @property
    def micro_batches_per_epoch(self) -> int:
        return math.ceil(len(self.train_rows) / self.global_micro_batch)

    @property
    def total_steps(self) -> int:
        if self.cfg.max_steps:
            return self.cfg.max_steps
        data_steps = max(
            1, math.ceil(self.cfg.num_epochs * self.micro_batches_per_epoch / self.cfg.gradient_accumulation_steps)
        )
        return data_steps * self.objective.updates_per_batch(self.cfg)


def prepare(cfg: Config, base_dir: Path | None) -> Run:
    """Load tokenizer, data, model and strategy; every input error surfaces here, before any output."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    distributed.check_supported(cfg)
    objective = objective_for(cfg)
    strategy = get_strategy(cfg.strategy)
    model_path = resolve_model_path(cfg.base_model)
    tokenizer = load_tokenizer(cfg.tokenizer_config or model_path, cfg.trust_remote_code)
    new_tokens = apply_tokens(tokenizer, cfg)
    train_rows, val_rows, report = objective.build_data(cfg, tokenizer, base_dir)
    rows: RowSource = RolloutEngine(cfg, objective, base_dir) if objective.rows_from_model else DatasetRows()
    evaluators = training_evaluation.build(cfg, base_dir)
    device = distributed.init()
    model = strategy.load(model_path, cfg, device)
    fit_embeddings(model, tokenizer, 32 if getattr(cfg, "resize_token_embeddings_to_32x", False) else 1)
    if new_tokens:
        report.notes.append(
            f"added tokens {new_tokens}: new embedding rows learn only where the embeddings "
            "train (full fine-tuning, or lora_modules_to_save listing embed_tokens and lm_head)"
        )
    model.config.use_cache = False
    if precision_note := bf16_fallback_note(cfg, device):
        report.notes.append(precision_note)
    if cfg.sample_packing and packed_attention.install(model):
        report.notes.append("packed rows: FlexAttention document masking (no dense mask)")
    elif cfg.sample_packing:
        drop_capacity(train_rows, val_rows)
    return Run(
        cfg,
        model,
        tokenizer,
        strategy,
        objective,
        rows,
        train_rows,
        val_rows,
        report.notes,
        device,
        model_path,
        evaluators=evaluators,
    )


def micro_batch_rows(run: Run, index: int) -> list:
    """This process's rows of global micro-batch `index` (epoch = index // micro-batches per epoch);
    in a single process, the whole micro-batch. The last one of an epoch may leave a rank none."""
    per_epoch = run.micro_batches_per_epoch
    epoch, position = divmod(index, per_epoch)
    order = torch.randperm(
        len(run.train_rows), generator=torch.Generator().manual_seed(run_keys.data_seed(run.cfg) + epoch)
    )
    size = run.global_micro_batch
    rows = [run.train_rows[i] for i in order[position * size : (position + 1) * size].tolist()]
    return distributed.shard(rows, run.cfg.micro_batch_size)


def _collate_or_filler(run: Run, rows: list, filler: list) -> tuple[dict[str, torch.Tensor], float]:
    """A rank with no rows still runs the model (the sharded weights need every rank in each
    collective) on a filler row whose loss is multiplied by 0; returns the batch and that weight."""
    pad = run.tokenizer.pad_token_id
    if rows:
        return run.objective.collate(rows, pad), 1.0
    return run.objective.collate(filler, pad) | {FILLER: torch.tensor(True)}, 0.0


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class StepBatches:
    """The collated micro-batches of one optimizer step with their weights (0 for a filler), this
    process's share of the metrics of making them (summed over processes), the row source's metrics
    (RL rollouts: already over every process), and their real (non-padding) token count."""

    batches: list[tuple[dict[str, torch.Tensor], float]]
    totals: dict
    tokens: int
    rollout: dict[str, float] = field(default_factory=dict)


def step_batches(run: Run, step: int, amp_dtype, pin: bool = False) -> StepBatches:
    """Select, (for RL) sample and collate the micro-batches of step `step`; `pin` puts them in pinned
    host memory so that their copy to the GPU does not block the host."""
    cfg = run.cfg
    first = (step // run.objective.updates_per_batch(cfg)) * cfg.gradient_accumulation_steps
    rows = [micro_batch_rows(run, first + i) for i in range(cfg.gradient_accumulation_steps)]
    with autocast(run.device, amp_dtype):
        rows, rollout = run.rows.step_rows(run, step, rows)
    totals: dict[str, float] = {}
    batches = [_collate_or_filler(run, r, run.train_rows[:1]) for r in rows]
    if mixture.DATASET_IDS in batches[0][0]:  # several datasets: what each contributed, counted on the host
        for batch, weight in batches:
            for key, value in mixture.counts_by_dataset(batch, len(replay.source_paths(cfg))).items():
                totals[key] = totals.get(key, 0.0) + weight * value
    if pin:
        batches = [({k: v.pin_memory() for k, v in b.items()}, w) for b, w in batches]
    return StepBatches(batches, totals, sum(int(w * real_tokens(b)) for b, w in batches), rollout)


class Prefetcher:
    """Collates step s + 1 on a worker thread while step s runs on the device (collation is host work
    that would otherwise sit between two steps). Only for objectives whose rows do not come from the
    model; RL objectives sample theirs inside the step."""

    def __init__(self, run: Run, amp_dtype):
        self.run, self.amp_dtype = run, amp_dtype
        self.pin = run.device.type == "cuda"
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="strop-collate")
        self.pending: dict[int, Future] = {}

    def get(self, step: int) -> StepBatches:
        future = self.pending.pop(step, None) or self.pool.submit(
            step_batches, self.run, step, self.amp_dtype, self.pin
        )
        if step + 1 < self.run.total_steps:
            self.pending[step + 1] = self.pool.submit(step_batches, self.run, step + 1, self.amp_dtype, self.pin)
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def train_step(run: Run, step: int, optimizer, scaler, amp_dtype, prepared: StepBatches | None = None) -> dict:
    """One optimizer step over A micro-batches, the loss normalised over all of them. Metric values may
    be device tensors: nothing here waits for the device (the caller converts them when it logs)."""
    cfg = run.cfg
    prepared = prepared or step_batches(run, step, amp_dtype)
    totals: dict[str, Any] = dict(prepared.totals)
    # Every process divides by the response tokens of the whole step, over all processes.
    denominator = max(1, distributed.sum_count(sum(run.objective.count(b) for b, w in prepared.batches if w)))
    scale = distributed.loss_scale()
    metrics: dict[str, Any]  # the objective's floats, plus the router's device tensors
    for batch, weight in prepared.batches:
        batch = _to(batch, run.device)
        with autocast(run.device, amp_dtype), run.router.recording(batch) if run.router else nullcontext():
            loss, metrics = run.objective.loss(run.model, batch, denominator)
        if run.router:  # the load-balancing and z-losses, a mean over the step's micro-batches
            router_loss, router_metrics = run.router.take(1 / len(prepared.batches))
            loss, metrics = loss + router_loss, metrics | router_metrics
        if scale != 1.0 or weight != 1.0:
            loss = loss * (scale * weight)
        (scaler.scale(loss) if scaler else loss).backward()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * value
    totals = distributed.sum_over_ranks(totals) | prepared.rollout | run.objective.finish_step()
    if "mixture.rows.0" in totals:
        names = mixture.dataset_names(replay.source_paths(cfg))
        totals = mixture.finish_metrics(totals, names, run.rows_seen)
    if run.router:
        totals |= run.router.finish_step(run.tracker.print if run.tracker else print)
    if scaler:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clip = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
    # a device tensor until the step is logged (`_host_values`)
    totals["grad_norm"] = distributed.unsharded(torch.nn.utils.clip_grad_norm_(params, clip))  # type: ignore[assignment]
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    totals["tokens"] = distributed.sum_count(prepared.tokens)
    return totals


def _host_values(metrics: dict) -> dict:
    """Device tensors to floats: the one wait for the device in a logged step."""
    return {k: float(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}


@torch.no_grad()
def evaluate(run: Run, amp_dtype) -> dict[str, float]:
    """The row source's own held-out metrics (RL: reward of greedy completions), else the token-weighted loss over the validation rows
    (dropout off)."""
    with autocast(run.device, amp_dtype):
        own = run.rows.evaluate(run)
    if own is not None:
        return own
    run.model.eval()
    size = (getattr(run.cfg, "eval_batch_size", None) or run.cfg.micro_batch_size) * distributed.world_size()
    total, count = 0.0, 0
    for start in range(0, len(run.val_rows), size):
        rows = distributed.shard(run.val_rows[start : start + size], size // distributed.world_size())
        batch, weight = _collate_or_filler(run, rows, run.val_rows[:1])
        batch = _to(batch, run.device)
        n = run.objective.count(batch)
        with autocast(run.device, amp_dtype):
            loss, _ = run.objective.loss(run.model, batch, 1.0)
        total, count = total + weight * float(loss), count + int(weight * n)
    run.model.train()
    summed = distributed.sum_over_ranks({"total": total, "count": count})
    return {"eval_loss": summed["total"] / max(1, summed["count"])}


def _save_final(run: Run, output_dir: Path) -> None:
    """Write the final artifact into a private temporary folder, then move it in (weights last)."""
    with disk_errors(output_dir, intact=ckpt.intact_note(output_dir)), temp_folder(output_dir / "final") as tmp:
        run.strategy.save(run.model, run.tokenizer, tmp)
        run.objective.save_artifacts(run.model, tmp)
        (tmp / "strop_config.yml").write_text(config_to_yaml(run.cfg))
        files = sorted(tmp.iterdir(), key=lambda p: p.suffix == ".safetensors")
        manifest.claim(*(output_dir / item.name for item in files))
        for item in files:
            target = output_dir / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            item.replace(target)


def _save_final_sharded(run: Run, output_dir: Path) -> None:
    """Gather the whole trainable state to rank 0 (every rank takes part), which saves it in the same
    HF/PEFT format as a single process: the strategy's own `save` reads the gathered state dict."""
    state = ckpt.gather_full_state(run.model, trainable_only=run.strategy.saves_trainable_only)
    with distributed.gathered_root(run.model):  # e.g. a reward head read directly by save_artifacts
        if distributed.is_main():
            run.model.state_dict = lambda *args, **kwargs: state  # type: ignore[assignment]
            try:
                _save_final(run, output_dir)
            finally:
                del run.model.state_dict
    distributed.barrier()


def train(
    cfg: Config, base_dir: Path | None = None, resume: bool = False, overwrite: bool = False, dry_run: bool = False
) -> Path | None:
    try:
        push_to = hub.target(cfg)
        if push_to and distributed.rank_before_init() == 0:  # before any model loads: no token, no training
            hub.check_access(push_to)
        run = prepare(cfg, base_dir)
        run.model = run.strategy.apply(run.model, cfg)
        run.strategy.upcast(run.model, cfg)
        if distributed.is_main():
            print_plan(run, push_to.describe() if push_to else None)
        if dry_run:
            return None
        output_dir = Path(cfg.output_dir)
        resume = resume or bool(getattr(cfg, "resume_from_checkpoint", None))
        start_from = outputs.prepare_output(output_dir, resume, overwrite, outputs.input_paths(cfg, base_dir))
        start_from = run_keys.checkpoint_to_resume(cfg, output_dir) or start_from
        outputs.start_output(output_dir, [*outputs.LOOP_FILES, *run.objective.output_files])
        output_dir = _train_loop(run, output_dir, start_from)
        if push_to and distributed.is_main():  # the output is complete: a failed push leaves it as it is
            hub.push(push_to, output_dir, cfg.base_model)
        return output_dir
    finally:
        if distributed.launched():
            distributed.teardown()


def _train_loop(run: Run, output_dir: Path, start_from: Path | None) -> Path:
    cfg = run.cfg
    if cfg.gradient_checkpointing or distributed.activation_checkpointing(cfg):
        options = {"use_reentrant": False, **(getattr(cfg, "gradient_checkpointing_kwargs", None) or {})}
        run.strategy.base_model(run.model).gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    run_keys.apply_per_epoch(cfg, run.micro_batches_per_epoch, run.objective.updates_per_batch(cfg))
    stop_rules = run_keys.StopRules(cfg)
    amp_dtype = autocast_dtype(cfg, run.device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    run.objective.prepare_training(run)  # before the optimizer and any checkpoint: may add trainable modules
    run.router = moe_monitor.attach(run.strategy.base_model(run.model), cfg)  # after any reference copy is made
    if distributed.active():  # after prepare_training, so that modules it adds are sharded too
        run.model = distributed.wrap(run.model, cfg, run.device, amp_dtype)
        torch.manual_seed(cfg.seed + distributed.rank())  # same init everywhere, then dropout differs by rank
    trainable = run.strategy.trainable_parameters(run.model)
    optimizer = run.strategy.build_optimizer(run.model, cfg, distributed.optimizer_device(cfg, run.device))
    run.strategy.attach_optimizer(run.model, optimizer, cfg)  # before resuming: L2-SP's w0 is the base
    total = run.total_steps
    scheduler = build_scheduler(optimizer, cfg, total)
    step = 0
    if start_from is not None:
        step = ckpt.resume(start_from, run.model, trainable, optimizer, scheduler)["step"]
        if (start_from / ROLLOUTS).is_file():
            with disk_errors(start_from / ROLLOUTS):
                run.rows.restore(json.loads((start_from / ROLLOUTS).read_text()))
        if distributed.is_main():
            print(f"strop: resumed from {start_from} at step {step}")
    outputs.cut_logs(output_dir, {name: step + offset for name, offset in outputs.APPEND_LOGS.items()})
    samples_before = _samples(run) if step == 0 else None
    run.model.train()
    prefetch = None if run.rows.rows_from_model else Prefetcher(run, amp_dtype)
    started, tokens_seen = time.perf_counter(), 0
    try:
        with (Tracker if distributed.is_main() else NullTracker)(output_dir, total, step) as tracker:
            if distributed.is_main():
                tracker.sinks += external_trackers.open_sinks(cfg, output_dir)
            run.tracker = tracker
            while step < total:
                run.strategy.on_step_start(run.model, step, cfg)
                prepared = prefetch.get(step) if prefetch else None
                metrics = train_step(run, step, optimizer, scaler, amp_dtype, prepared)
                metrics["lr"] = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                tokens_seen += metrics.pop("tokens")
                evaluated = run.val_rows and cfg.eval_steps and (step % cfg.eval_steps == 0 or step == total)
                if evaluated:
                    metrics.update(evaluate(run, amp_dtype))
                extra = training_evaluation.evaluate(run, step)
                metrics.update(extra)
                if step % cfg.logging_steps == 0 or step == total or evaluated or extra:
                    tracker.log(step, _host_values(metrics) | _progress(run, step, tokens_seen, started))
                tracker.advance(step)
                stop = stop_rules.update(_host_values(metrics)) if stop_rules.active else None
                if stop:
                    print(f"strop: {stop}: stopping at step {step} of {total}")
                    break
                if cfg.save_steps and step % cfg.save_steps == 0 and step < total:
                    _save_checkpoint(run, output_dir, step, trainable, optimizer, scheduler)
    finally:
        if prefetch:
            prefetch.close()
    run.tracker = None
    final_eval = evaluate(run, amp_dtype) if run.val_rows else None
    if cfg.save_steps:
        _save_checkpoint(run, output_dir, step, trainable, optimizer, scheduler)
    (_save_final_sharded if distributed.active() else _save_final)(run, output_dir)
    samples_after = _samples(run) if samples_before is not None else None
    if distributed.is_main():
        with disk_errors(output_dir / "loss.png"):
            plot = plot_losses(output_dir / "metrics.jsonl", output_dir / "loss.png")
        if samples_before is not None:
            print_samples(cfg.sample_prompts or [], samples_before, samples_after or [])
        print_summary(run, output_dir, final_eval, plot)
    return output_dir


def _progress(run: Run, step: int, tokens_seen: int, started: float) -> dict[str, float]:
    """Throughput and position of a logged step. Read after the step's values reached the host, so the
    clock includes all of its device work; `elapsed_s` and `tokens_seen` let a benchmark take the rate
    between any two logged steps."""
    cfg, elapsed = run.cfg, time.perf_counter() - started
    progress = {
        "tokens_seen": tokens_seen,
        "elapsed_s": round(elapsed, 4),
        "tokens_per_s": tokens_seen / elapsed,
        "epoch": step
        * cfg.gradient_accumulation_steps
        / run.micro_batches_per_epoch
        / run.objective.updates_per_batch(cfg),
    }
    if run.device.type == "cuda":
        progress["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated(run.device) / 2**30, 3)
    return progress


def _save_checkpoint(run: Run, output_dir: Path, step: int, trainable, optimizer, scheduler) -> None:
    saved = run.rows.state(step)  # every rank: the row source may gather its state over ranks
    files = {ROLLOUTS: json.dumps(saved)} if saved is not None else None
    if distributed.active():
        ckpt.save_sharded_checkpoint(
            output_dir, step, run.model, trainable, optimizer, scheduler, {}, run.cfg.save_total_limit, files
        )
    else:
        ckpt.save_checkpoint(output_dir, step, trainable, optimizer, scheduler, {}, run.cfg.save_total_limit, files)


#: A checkpoint's saved row-source state (RL: the rollouts the next steps reuse), when there is any.
ROLLOUTS = "rollouts.json"


def _samples(run: Run) -> list[str] | None:
    if not run.cfg.sample_prompts:
        return None
    with distributed.gathered_root(run.model):  # every rank generates in lockstep; rank 0 prints
        return answer_prompts(run.model, run.tokenizer, run.cfg.sample_prompts, run.cfg.sample_max_new_tokens)
