"""`strop report`: one self-contained page comparing training runs (see runs.py, charts.py, render.py)."""

from strop.evaluation.report.render import write_report
from strop.evaluation.report.runs import RunRecord, load_run

__all__ = ["RunRecord", "load_run", "write_report"]
