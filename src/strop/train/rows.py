"""Where the rows of each training step come from: the dataset, or (RL) the rollout engine in rl/engine.py."""

from __future__ import annotations

from typing import Protocol

from strop.run_types import RunState


class RowSource(Protocol):
    #: True when rows are made with the model itself: the loop cannot prepare a step ahead of it.
    rows_from_model: bool

    def step_rows(self, run: RunState, step: int, micro_batches: list[list]) -> tuple[list[list], dict[str, float]]:
        """The rows each micro-batch of step `step` trains on, given its data rows (this process's share),
        and metrics of making them, over every process."""
        ...

    def evaluate(self, run: RunState) -> dict[str, float] | None:
        """Held-out metrics of the source's own, or None for the loop's loss on the validation rows."""
        ...

    def state(self, step: int) -> dict | None:
        """What a checkpoint taken before step `step` must keep for the run to continue exactly (JSON;
        every process calls it), or None."""
        ...

    def restore(self, saved: dict) -> None:
        """Take back what `state` gave, on any number of processes."""
        ...


class DatasetRows:
    """The row source of supervised objectives: each step trains on its rows of the dataset."""

    rows_from_model = False

    def step_rows(self, run: RunState, step: int, micro_batches: list[list]) -> tuple[list[list], dict[str, float]]:
        return micro_batches, {}

    def evaluate(self, run: RunState) -> None:
        return None

    def state(self, step: int) -> None:
        """The data position follows from the step alone."""
        return None

    def restore(self, saved: dict) -> None:
        """Nothing to take back: `state` saves nothing."""
