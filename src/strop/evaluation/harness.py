"""A bridge to EleutherAI's lm-evaluation-harness (`pip install lm-eval`, the `lm-eval` extra): its
benchmark tasks (arc_easy, hellaswag, mmlu, gsm8k, ...) on any model strop loads, through strop's own
loading, so a base model, an adapter folder and a merged model are all one argument.

strop loads the model (`strop.models.saved.load_for_chat`: an adapter goes onto its base) and hands the live
model and tokenizer to the harness's `HFLM` wrapper, which accepts an initialised model; the harness
then runs its tasks unchanged (log-likelihood, multiple choice, generation), so the numbers are the
harness's own. Tasks are loaded by the harness's TaskManager: its built-in tasks (which download their
datasets from the hub) and any task YAML in `include_path` (which may read local files with
`dataset_path: json` and `dataset_kwargs: {data_files: ...}`, as the tests do).
"""

from __future__ import annotations

from typing import Any

from strop.errors import StropError


def _harness():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise StropError(
            f"eval --tasks needs lm-evaluation-harness: pip install lm-eval (or strop[lm-eval]); "
            f"importing it failed: {err}"
        ) from err
    return lm_eval, HFLM, TaskManager


def harness_model(model, tokenizer, batch_size: int = 8, max_new_tokens: int | None = None):
    """The harness's LM interface over an already loaded model (base, adapter or merged)."""
    _, HFLM, _ = _harness()
    options: dict[str, Any] = {"max_length": getattr(model.config, "max_position_embeddings", None)}
    if max_new_tokens:
        options["max_gen_toks"] = max_new_tokens
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, **{k: v for k, v in options.items() if v})


def run_tasks(
    target: str,
    tasks: list[str],
    limit: int | None = None,
    batch_size: int = 8,
    include_path: str | None = None,
    trust_remote_code: bool = False,
    max_new_tokens: int | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Run harness tasks on `target` (or on `loaded` = (model, tokenizer)); returns its results per task."""
    lm_eval, _, TaskManager = _harness()
    tasks = [t.strip() for t in tasks if t.strip()]
    manager = _task_manager(TaskManager, tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise StropError(
            f"eval --tasks: unknown lm-eval task(s) {', '.join(unknown)}"
            + (f" (none in --include-path {include_path} either)" if include_path else "")
        )
    if loaded is None:
        from strop.models.saved import load_for_chat

        loaded = load_for_chat(target, trust_remote_code)
    model, tokenizer = loaded
    lm = harness_model(model, tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens)
    output = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, limit=limit, task_manager=manager, batch_size=batch_size, log_samples=False
    )
    results = {
        task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "alias"}
        for task, metrics in output["results"].items()
    }
    _print(results)
    return {"model": target, "limit": limit, "tasks": results}


def _task_manager(TaskManager, tasks: list[str], include_path: str | None):
    """Only the tasks of `include_path` when it holds every task asked for (indexing the harness's
    own thousands of task files takes many seconds), else those and the built-in ones."""
    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
        return TaskManager(include_path=include_path)
    return TaskManager()


def _print(results: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("task", "metric", "value", title="lm-evaluation-harness")
    for task, metrics in results.items():
        for key, value in metrics.items():
            if "stderr" not in key:
                stderr = metrics.get(key.replace(",", "_stderr,", 1))
                table.add_row(task, key, f"{value:.4f}" + (f" ± {stderr:.4f}" if isinstance(stderr, float) else ""))
    Console().print(table)
