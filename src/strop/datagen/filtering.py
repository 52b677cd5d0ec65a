"""Run filters over a dataset in one streaming pass, then an optional diversity selection, and report.

Rows are read and checked in batches (a judge or a model scores a batch at once); a row dropped by one
filter is not shown to the next. The report counts, per filter, the rows it saw and dropped by reason;
the rejects file (optional) holds every dropped row with its filter and reason. Deduplication keeps
state across the whole pass, so the run is not resumable mid-way: the output appears only when complete.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from strop.data.readers import read_rows
from strop.datagen.filters import Filter, Item
from strop.datagen.sink import RejectLog, Sink


@dataclass
class FilterReport:
    """Per stage: rows seen, and rows dropped by reason label."""

    seen: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)
    read: int = 0
    kept: int = 0

    def drop(self, stage: str, label: str) -> None:
        self.dropped.setdefault(stage, Counter())[label] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept,
                "stages": {name: {"seen": self.seen[name], "dropped": dict(self.dropped.get(name, {}))}
                           for name in self.seen}}

    def table(self) -> Table:
        table = Table(title=f"{self.read} rows read, {self.kept} kept")
        for column in ("filter", "seen", "dropped", "why"):
            table.add_column(column)
        for name in self.seen:
            reasons = self.dropped.get(name, Counter())
            why = ", ".join(f"{label}: {n}" for label, n in reasons.most_common())
            table.add_row(name, str(self.seen[name]), str(sum(reasons.values())), why or "-")
        return table


def _apply(filters: list[Filter], batch: list[Item], report: FilterReport, rejects: RejectLog) -> list[Item]:
    for stage in filters:
        report.seen[stage.name] += len(batch)
        survivors = []
        for item, reason in zip(batch, stage.check_batch(batch)):
            if reason is None:
                survivors.append(item)
            else:
                report.drop(stage.name, reason[0])
                rejects.write(item[0], item[1], stage.name, f"{reason[0]}: {reason[1]}")
        batch = survivors
    return batch


def run_filters(path: str, out: str, filters: list[Filter], selector=None, rejects_path: str | None = None,
                batch_size: int = 16, card: dict[str, Any] | None = None) -> FilterReport:
    """Filter `path` into `out`; `selector(items) -> (kept, dropped_with_reasons)` runs last, on all survivors."""
    report = FilterReport()
    for stage in filters:
        report.seen[stage.name] = 0
    rejects = RejectLog(rejects_path)
    sink = Sink(out, key={}, resume=False)
    kept: list[Item] = []  # only a selector needs every survivor at once; otherwise rows stream out

    def take(survivors: list[Item]) -> None:
        if selector is not None:
            kept.extend(survivors)
        else:
            for _, row in survivors:
                sink.write(row)
        report.kept += len(survivors)

    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("filtering", total=None)
            batch: list[Item] = []
            for item in read_rows(path):
                report.read += 1
                batch.append(item)
                if len(batch) == batch_size:
                    take(_apply(filters, batch, report, rejects))
                    batch = []
                    progress.update(task, completed=report.read)
            take(_apply(filters, batch, report, rejects))
        if selector is not None:
            report.seen[selector.name] = len(kept)
            kept, dropped = selector.select(kept)
            for (where, row), (label, detail) in dropped:
                report.drop(selector.name, label)
                rejects.write(where, row, selector.name, f"{label}: {detail}")
            for _, row in kept:
                sink.write(row)
            report.kept = len(kept)
        stages = [{"name": s.name, **s.settings()} for s in filters + ([selector] if selector else [])]
        sink.finish({**(card or {}), "command": "data filter", "input": path, "filters": stages,
                     "report": report.as_dict(), "rejects": rejects_path})
    finally:
        sink.close()
        rejects.close()
    return report


def print_report(report: FilterReport) -> None:
    Console().print(report.table())
