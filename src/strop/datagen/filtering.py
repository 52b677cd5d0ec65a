"""Run filters over a dataset in one streaming pass, then an optional diversity selection, and report.

Rows are read and checked in batches (a judge or a model scores a batch at once); a row dropped by one
filter is not shown to the next. The report counts, per filter, the rows it saw and dropped by reason;
the rejects file (optional) holds every dropped row with its filter and reason. A killed pass resumes
after its last committed batch, replaying the rows before it through the dedup filters to rebuild their
indexes (cheap next to a judge); a diversity selection, which needs every survivor, starts over.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from strop.data.readers import read_rows
from strop.datagen.filters import Filter, Item
from strop.datagen.sink import RejectLog, Sink, input_stamp


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
        return {
            "read": self.read,
            "kept": self.kept,
            "stages": {
                name: {"seen": self.seen[name], "dropped": dict(self.dropped.get(name, {}))} for name in self.seen
            },
        }

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


def _restore(report: FilterReport, saved: dict[str, Any]) -> None:
    report.read, report.kept = saved["read"], saved["kept"]
    for name, stage in saved["stages"].items():
        report.seen[name] = stage["seen"]
        report.dropped[name] = Counter(stage["dropped"])


def _replay(path: str, filters: list[Filter], rows: int, batch_size: int) -> None:
    """Rebuild the dedup indexes of a killed run: its first `rows` rows go again through the filters up
    to the last stateful one (those before it are deterministic, so the same rows reach it)."""
    last = max((i for i, stage in enumerate(filters) if getattr(stage, "stateful", False)), default=-1)
    if last < 0 or rows == 0:
        return
    scratch, quiet, batch = FilterReport(), RejectLog(None), []
    for item in islice(read_rows(path), rows):
        batch.append(item)
        if len(batch) == batch_size:
            _apply(filters[: last + 1], batch, scratch, quiet)
            batch = []
    _apply(filters[: last + 1], batch, scratch, quiet)


def run_filters(
    path: str,
    out: str,
    filters: list[Filter],
    selector=None,
    rejects_path: str | None = None,
    batch_size: int = 16,
    card: dict[str, Any] | None = None,
    resume: bool = True,
) -> FilterReport:
    """Filter `path` into `out`; `selector.select(items) -> (kept, dropped_with_reasons)` runs last, on all
    survivors. Without a selector the pass streams and a killed run resumes after its last batch."""
    report = FilterReport()
    for stage in filters:
        report.seen[stage.name] = 0
    settings = [{"name": s.name, **s.settings()} for s in filters + ([selector] if selector else [])]
    sink = Sink(
        out,
        key={"input": input_stamp(path), "filters": settings, "rejects": rejects_path, "batch": batch_size},
        resume=resume and selector is None,
    )
    if sink.resumed:
        _restore(report, sink.extra["report"])
        _replay(path, filters, sink.consumed, batch_size)
    rejects = RejectLog(rejects_path, sink.extra.get("rejects_bytes") if sink.resumed else None)
    kept: list[Item] = []  # only a selector needs every survivor at once; otherwise rows stream out

    def take(survivors: list[Item]) -> None:
        if selector is not None:
            kept.extend(survivors)
        else:
            for _, row in survivors:
                sink.write(row)
        report.kept += len(survivors)
        sink.extra.update(report=report.as_dict(), rejects_bytes=rejects.tell())
        sink.commit(report.read)

    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("filtering", total=None)
            batch: list[Item] = []
            for item in islice(read_rows(path), sink.consumed, None):
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
        sink.finish(
            {
                **(card or {}),
                "command": "data filter",
                "input": path,
                "filters": settings,
                "report": report.as_dict(),
                "rejects": rejects_path,
            }
        )
    finally:
        sink.close()
        rejects.close()
    return report


def print_report(report: FilterReport) -> None:
    Console().print(report.table())
