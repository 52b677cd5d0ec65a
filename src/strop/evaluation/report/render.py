"""The report as HTML (self-contained: inline CSS and SVG, no script, nothing fetched) and as markdown,
both from the same sections, so the two never disagree."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from strop import manifest
from strop.evaluation.report.charts import line_chart
from strop.evaluation.report.runs import RunRecord, config_differences, load_run, run_names
from strop.safe_io import write_text

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;"
    "vertical-align:top;text-align:left;font-size:13px}th{background:#f3f3f3}td.num{text-align:right;"
    "font-variant-numeric:tabular-nums}.charts{display:flex;flex-wrap:wrap;gap:12px}"
    "pre{white-space:pre-wrap;margin:0;font-size:12px}"
)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(_cell(v))}</td>'
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td><pre>{escape(_cell(v))}</pre></td>"
            for v in row
        )
        + "</tr>"
        for row in table.rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(table: Table) -> str:
    def md(value: Any) -> str:
        return _cell(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(table.headers) + " |", "|" + "---|" * len(table.headers)]
    return "\n".join(lines + ["| " + " | ".join(md(v) for v in row) + " |" for row in table.rows])


def overview(runs: list[RunRecord]) -> Table:
    return Table(
        ["run", "folder", "base model", "objective", "strategy"],
        [
            [
                r.name,
                str(r.folder),
                r.config.get("base_model"),
                r.config.get("rl") or "sft",
                r.config.get("adapter") or "full",
            ]
            for r in runs
        ],
    )


def differences(runs: list[RunRecord]) -> Table:
    keys, flat = config_differences(runs)
    return Table(["key", *[r.name for r in runs]], [[k, *[flat[r.name].get(k, "—") for r in runs]] for k in keys])


def speed(runs: list[RunRecord]) -> Table:
    summaries = [r.summary() for r in runs]
    keys = list(dict.fromkeys(k for s in summaries for k in s))
    return Table(["", *[r.name for r in runs]], [[k, *[s.get(k) for s in summaries]] for k in keys])


def evals(runs: list[RunRecord]) -> Table:
    finals = [r.final_evals() for r in runs]
    keys = list(dict.fromkeys(k for f in finals for k in f))
    return Table(["metric", *[r.name for r in runs]], [[k, *[f.get(k) for f in finals]] for k in keys])


def forgetting(runs: list[RunRecord]) -> Table:
    rows = []
    for run in runs:
        for side in ("target", "general"):
            item = run.forgetting.get(side)
            if item:
                good = (item["change"] >= 0) == item["higher_is_better"] or item["change"] == 0
                rows.append(
                    [
                        run.name,
                        side,
                        item["metric"],
                        item["base"],
                        item["tuned"],
                        item["change"],
                        "better" if good else "worse",
                    ]
                )
    return Table(["run", "side", "metric", "base", "tuned", "change", "verdict"], rows)


def samples(runs: list[RunRecord]) -> list[tuple[str, Table]]:
    """Per generative evaluator, one row per prompt: the reference (if any), then each run's reply side
    by side (and the base model's, when a forgetting comparison recorded it)."""
    out = []
    names = list(dict.fromkeys(n for r in runs for n in r.evals.get("samples", {})))
    for name in names:
        columns: dict[str, dict[str, Any]] = {}
        prompts: dict[str, str] = {}
        base: list[dict[str, Any]] = next(
            (r.forgetting["samples"]["base"].get(name, []) for r in runs if r.forgetting.get("samples")), []
        )
        for label, items in [("base", base)] + [(r.name, r.evals.get("samples", {}).get(name, [])) for r in runs]:
            for item in items:
                if "reply" not in item:  # scored text (perplexity) or given pairs: nothing generated
                    continue
                key = str(item.get("prompt", ""))
                if not prompts.get(key):
                    prompts[key] = str(item.get("reference", ""))
                columns.setdefault(label, {})[key] = item["reply"]
        labels = [label for label in ["base", *[r.name for r in runs]] if label in columns]
        if not labels:
            continue
        rows = [
            [prompt, reference, *[columns[label].get(prompt) for label in labels]]
            for prompt, reference in prompts.items()
        ]
        out.append((name, Table(["prompt", "reference", *labels], rows)))
    return out


def charts(runs: list[RunRecord]) -> list[str]:
    keys = list(dict.fromkeys(k for r in runs for k in r.curve_keys()))
    return [line_chart(key, {r.name: r.curve(key) for r in runs if r.curve(key)}) for key in keys]


def _sections(runs: list[RunRecord]) -> list[tuple[str, Any]]:
    one = len(runs) == 1
    sections: list[tuple[str, Any]] = [
        ("Runs", overview(runs)),
        ("Config (keys set away from their defaults)" if one else "Config differences", differences(runs)),
        ("Speed and memory", speed(runs)),
        ("Curves", None),
        ("Evaluation", evals(runs)),
    ]
    if any(r.forgetting for r in runs):
        sections.append(("Forgetting (base → tuned)", forgetting(runs)))
    sections += [(f"Samples: {name}", table) for name, table in samples(runs)]
    return sections


def render_html(runs: list[RunRecord], title: str) -> str:
    body = [f"<h1>{escape(title)}</h1><p>{escape(_stamp())}</p>"]
    for heading, table in _sections(runs):
        body.append(f"<h2>{escape(heading)}</h2>")
        if heading == "Curves":
            drawn = [c for c in charts(runs) if c]
            body.append(f'<div class="charts">{"".join(drawn)}</div>' if drawn else "<p>No metrics logged.</p>")
        elif table.rows:
            body.append(_html_table(table))
        else:
            body.append("<p>None.</p>" if heading != "Config differences" else "<p>The configs are identical.</p>")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def render_markdown(runs: list[RunRecord], title: str) -> str:
    lines = [f"# {title}", "", _stamp(), ""]
    for heading, table in _sections(runs):
        lines += [f"## {heading}", ""]
        if heading == "Curves":
            pictures = [
                f"- {r.name}: ![{r.name}]({(r.folder / 'loss.png').resolve()})"
                for r in runs
                if (r.folder / "loss.png").is_file()
            ]
            lines += (pictures or ["No plots."]) + ["", "(The HTML report draws every curve, all runs overlaid.)"]
        else:
            lines.append(_md_table(table) if table.rows else "None.")
        lines.append("")
    return "\n".join(lines)


def _stamp() -> str:
    return f"Written by strop report on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC."


def write_report(folders: Sequence[str | Path], out: str | Path, title: str = "strop report") -> tuple[Path, Path]:
    """Write `out` (.html) and the markdown beside it (.md); returns both paths. Every run is read
    before anything is written."""
    paths = [Path(f) for f in folders]
    runs = [load_run(f, name) for f, name in zip(paths, run_names(paths))]
    html_path = Path(out).with_suffix(".html")
    md_path = html_path.with_suffix(".md")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    manifest.claim(html_path, md_path)
    write_text(md_path, render_markdown(runs, title))
    write_text(html_path, render_html(runs, title))
    return html_path, md_path
