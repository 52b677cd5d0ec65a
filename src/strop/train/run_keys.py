"""The loop's Axolotl-named controls: checkpoints and evaluations per epoch, resume_from_checkpoint,
early stopping and the loss watchdog, data_seed.

Kept apart from loop.py so that the loop reads as the one training procedure and these stay small,
testable rules:

- saves_per_epoch / evals_per_epoch: every max(1, ⌊steps per epoch / n⌋) optimizer steps, unless
  save_steps / eval_steps are set (they win, as in Axolotl);
- early_stopping_patience N: stop when N evaluations in a row did not lower the best eval loss
  (transformers' EarlyStoppingCallback with threshold 0);
- loss_watchdog_threshold T, loss_watchdog_patience P (default 3): stop when the training loss is above
  T at P logged steps in a row (Axolotl's LossWatchdogCallback): a diverged run stops early instead of
  spending its budget;
- resume_from_checkpoint: a checkpoint folder of output_dir to continue from.
"""

from __future__ import annotations

import math
from pathlib import Path

from strop.config import Config
from strop.errors import StropError
from strop.train import checkpoint as ckpt


def data_seed(cfg: Config) -> int:
    """Seed of the data order and the validation split: data_seed when set, else seed."""
    value = getattr(cfg, "data_seed", None)
    return cfg.seed if value is None else value


def apply_per_epoch(cfg: Config, micro_batches_per_epoch: int, updates_per_batch: int = 1) -> None:
    """Set save_steps / eval_steps from saves_per_epoch / evals_per_epoch where they are unset."""
    steps = max(1, math.ceil(micro_batches_per_epoch / cfg.gradient_accumulation_steps)) * updates_per_batch
    if getattr(cfg, "saves_per_epoch", None) and cfg.save_steps is None:
        cfg.save_steps = max(1, steps // cfg.saves_per_epoch)
    if getattr(cfg, "evals_per_epoch", None) and cfg.eval_steps is None:
        cfg.eval_steps = max(1, steps // cfg.evals_per_epoch)


def checkpoint_to_resume(cfg: Config, output_dir: Path) -> Path | None:
    """The folder resume_from_checkpoint names, checked to be one of output_dir's checkpoints."""
    name = getattr(cfg, "resume_from_checkpoint", None)
    if not name:
        return None
    path = Path(name)
    found = {p.resolve(): p for p in ckpt.list_checkpoints(output_dir)}
    if path.resolve() not in found and (output_dir / path.name).resolve() not in found:
        names = ", ".join(p.name for p in found.values()) or "none"
        raise StropError(
            f"resume_from_checkpoint: {name} is not a checkpoint of output_dir {output_dir} (its checkpoints: {names})"
        )
    return found.get(path.resolve()) or found[(output_dir / path.name).resolve()]


class StopRules:
    """Early stopping on eval loss and the loss watchdog: `update` returns why to stop, or None."""

    def __init__(self, cfg: Config):
        self.patience = getattr(cfg, "early_stopping_patience", None)
        self.threshold = getattr(cfg, "loss_watchdog_threshold", None)
        self.watch_patience = getattr(cfg, "loss_watchdog_patience", None) or 3
        self.best, self.stale, self.high = math.inf, 0, 0
        self.active = bool(self.patience or self.threshold)

    def update(self, metrics: dict[str, float]) -> str | None:
        if self.patience and "eval_loss" in metrics:
            if metrics["eval_loss"] < self.best:
                self.best, self.stale = metrics["eval_loss"], 0
            else:
                self.stale += 1
                if self.stale >= self.patience:
                    return f"early stopping: eval loss has not improved on {self.best:.4g} for {self.stale} evaluations"
        if self.threshold and "loss" in metrics:
            self.high = self.high + 1 if metrics["loss"] > self.threshold else 0
            if self.high >= self.watch_patience:
                return (
                    f"loss watchdog: loss above {self.threshold} for {self.high} steps in a row "
                    f"(last {metrics['loss']:.4g})"
                )
        return None
