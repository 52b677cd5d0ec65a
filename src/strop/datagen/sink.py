"""Where every `strop data` command writes: a JSONL file that appears only when complete, resumes after a
kill without duplicating rows, and gets a card beside it.

Rows go to `.<out>.partial`; after each batch of inputs the writer fsyncs it and records, in
`.<out>.progress.json`, how many inputs are done and the partial file's length at that moment. A run
killed mid-batch restarts from that record: the partial file is cut back to the recorded length (rows
of the unfinished batch go) and the first `consumed` inputs are skipped, so no row is written twice.
The record holds a key made of the command's inputs and options, so a run with other arguments starts
afresh instead of continuing someone else's file. On success the partial file is renamed over `<out>`
and `<out>.card.json` says what made it (counts, filters, seeds, models).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

from strop.safe_io import disk_errors, write_text


def input_stamp(path: str) -> dict[str, Any]:
    """Size and modification time of a local input, part of a resume key: an edited input starts afresh."""
    try:
        info = os.stat(path)
    except OSError:
        return {"path": path}
    return {"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def card_path(out: Path) -> Path:
    return out.with_name(out.name + ".card.json")


class Sink:
    """A resumable JSONL writer: `write` rows, `commit(consumed)` after each batch, `finish(card)`."""

    def __init__(self, out: str | Path, key: dict[str, Any], resume: bool = True):
        self.out = Path(out)
        self.partial = self.out.with_name(f".{self.out.name}.partial")
        self.state = self.out.with_name(f".{self.out.name}.progress.json")
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.resumable = resume
        self.consumed, self.written, self.resumed = 0, 0, False
        self.counts: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}  # whatever else a writer needs back on resume
        with disk_errors(self.out):
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._open(resume)

    def _open(self, resume: bool) -> None:
        saved = json.loads(self.state.read_text()) if resume and self.state.is_file() else None
        if saved and saved.get("key") == self.key and self.partial.is_file():
            self.handle: BinaryIO = self.partial.open("r+b")
            self.handle.truncate(saved["bytes"])
            self.handle.seek(saved["bytes"])
            self.consumed, self.written = saved["consumed"], saved["written"]
            self.counts.update(saved.get("counts", {}))
            self.extra = saved.get("extra", {})
            self.resumed = True
        else:
            self.handle = self.partial.open("wb")

    def write(self, row: dict[str, Any]) -> None:
        self.handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        self.written += 1

    def commit(self, consumed: int) -> None:
        """Everything written so far is durable and covers the first `consumed` inputs."""
        with disk_errors(self.out):
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.consumed = consumed
            state = {
                "key": self.key,
                "consumed": consumed,
                "written": self.written,
                "bytes": self.handle.tell(),
                "counts": dict(self.counts),
                "extra": self.extra,
            }
            write_text(self.state, json.dumps(state))

    def finish(self, card: dict[str, Any]) -> Path:
        """Publish the file and its card; `card` gets the row count, the counters and the time."""
        with disk_errors(self.out):
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.partial, self.out)
            full = {
                **card,
                "output": str(self.out),
                "rows": self.written,
                "counts": dict(self.counts),
                "resumed": self.resumed,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_text(card_path(self.out), json.dumps(full, indent=2, default=str) + "\n")
            self.state.unlink(missing_ok=True)
        return self.out

    def close(self) -> None:
        """Stop without publishing (an error): the partial file and its record stay for a resume, or
        go, for a writer that cannot resume (a filter pass), so that nothing half-written is left."""
        if not self.handle.closed:
            self.handle.close()
            if not self.resumable:
                self.partial.unlink(missing_ok=True)
                self.state.unlink(missing_ok=True)


class RejectLog:
    """Optional JSONL of dropped rows, each with the filter and reason that dropped it."""

    def __init__(self, path: str | Path | None, keep_bytes: int | None = None):
        """`keep_bytes`: a resumed run keeps this much of an earlier log (its committed part)."""
        self.path = Path(path) if path else None
        self.handle = None
        if self.path is not None:
            with disk_errors(self.path):
                if keep_bytes is not None and self.path.is_file():
                    self.handle = self.path.open("r+", encoding="utf-8")
                    self.handle.truncate(keep_bytes)
                    self.handle.seek(keep_bytes)
                else:
                    self.handle = self.path.open("w", encoding="utf-8")

    def tell(self) -> int:
        if self.handle is None:
            return 0
        self.handle.flush()
        return self.handle.tell()

    def write(self, where: str, row: dict[str, Any], filter_name: str, reason: str) -> None:
        if self.handle is not None:
            entry = {"where": where, "filter": filter_name, "reason": reason, "row": row}
            self.handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
