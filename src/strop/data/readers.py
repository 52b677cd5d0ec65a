"""Read dataset rows from JSONL, JSON, Parquet, CSV or the hub, each tagged with where it came from.

Every row carries a location string ("data.jsonl:17") so that a format error anywhere downstream can
name the file and line the user has to fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from strop.errors import StropError

Row = tuple[str, dict[str, Any]]
FILE_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv"}


def resolve_data_path(path: str, base_dir: Path | None) -> Path | None:
    """The local file `path` names (relative to the config's folder, then the working folder), if any."""
    candidates = [Path(path).expanduser()]
    if base_dir is not None and not Path(path).is_absolute():
        candidates.insert(0, base_dir / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            raise StropError(
                f"dataset path {candidate} is a folder: name one .jsonl, .json, .parquet or .csv file "
                "(a list under `datasets:` takes several)"
            )
    return None


@contextmanager
def _readable(path: Path, where: str) -> Iterator[None]:
    """Turn an unreadable file (permissions, a device, bytes that are not UTF-8) into a StropError that
    names it; `where` is the file, or the line, for one that breaks in the middle."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise StropError(
            f"{where}: not UTF-8 text (byte {err.object[err.start]:#04x}); save the file as UTF-8"
        ) from err
    except OSError as err:
        raise StropError(f"{path}: cannot read the dataset file: {err.strerror or err}") from err


def _read_jsonl(path: Path) -> Iterator[Row]:
    """Decoded line by line (not through a buffered text stream) so that a byte that is not UTF-8 is
    reported on its own line."""
    with _readable(path, str(path)), path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            with _readable(path, where):
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM some editors add
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise StropError(f"{where}: malformed JSON: {err.msg} (column {err.colno})") from err
            if not isinstance(row, dict):
                raise StropError(f"{where}: each line must be a JSON object, got {type(row).__name__}")
            yield where, row


def _read_json(path: Path) -> Iterator[Row]:
    try:
        with _readable(path, str(path)):
            data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise StropError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from err
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise StropError(f'{path}: a JSON dataset must be a list of objects (or {{"data": [...]}})')
    for index, row in enumerate(data):
        where = f"{path}[{index}]"
        if not isinstance(row, dict):
            raise StropError(f"{where}: each item must be an object, got {type(row).__name__}")
        yield where, row


def _read_table(path: Path) -> Iterator[Row]:
    import pyarrow as pa

    kind = "Parquet" if path.suffix == ".parquet" else "CSV"
    try:
        with _readable(path, str(path)):
            if kind == "Parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
            else:
                import pyarrow.csv as pcsv

                table = pcsv.read_csv(path)
    except pa.ArrowException as err:  # a broken footer, a truncated page, a ragged CSV row
        raise StropError(f"{path}: not a readable {kind} file: {' '.join(str(err).split())}") from err
    first_line, unit = (0, "row") if kind == "Parquet" else (2, "line")  # CSV line 1 is the header
    for index, row in enumerate(table.to_pylist()):
        yield f"{path}:{unit} {index + first_line}" if unit == "line" else f"{path}:row {index}", row


def _read_hub(path: str, split: str, name: str | None) -> Iterator[Row]:
    try:
        import datasets
    except ImportError as err:
        raise StropError(f"'{path}' is not a local file; loading it from the hub needs: pip install datasets") from err
    try:
        data = datasets.load_dataset(path, name, split=split)
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise StropError(f"could not load dataset '{path}' (split {split}): {err}") from err
    for index, row in enumerate(data):
        yield f"{path}[{split}][{index}]", dict(row)


def read_rows(path: str, base_dir: Path | None = None, split: str = "train", name: str | None = None) -> Iterator[Row]:
    local = resolve_data_path(path, base_dir)
    if local is None:
        if Path(path).suffix in FILE_SUFFIXES or path.startswith((".", "/", "~")):
            raise StropError(f"dataset file not found: {path}")
        yield from _read_hub(path, split, name)
        return
    if local.suffix == ".jsonl":
        yield from _read_jsonl(local)
    elif local.suffix == ".json":
        yield from _read_json(local)
    elif local.suffix in {".parquet", ".csv"}:
        yield from _read_table(local)
    else:
        raise StropError(f"{local}: unsupported file type '{local.suffix}' (use .jsonl, .json, .parquet or .csv)")
