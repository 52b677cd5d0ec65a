"""`strop eval`: score a base model, an adapter folder or a merged model with strop's evaluators, with
lm-evaluation-harness tasks, and against its base (forgetting).

    strop eval MODEL DATA                          exact and normalised match on alpaca/chat rows
    strop eval MODEL DATA --metric pass_at_k --set n=8 --set k=[1,4]
    strop eval MODEL --evals evals.yml             every evaluator listed in a YAML file
    strop eval MODEL DATA --forgetting GENERAL --base BASE
    strop eval MODEL --tasks arc_easy,hellaswag --limit 100    (pip install lm-eval)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from strop.config import parse_override
from strop.errors import StropError
from strop.safe_io import write_text

REFERENCE_TYPES = ("alpaca", "chat", "sharegpt")


def target_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The evaluator specs the arguments ask for: the --evals file, then DATA with --metric."""
    specs: list[dict[str, Any]] = []
    if args.evals:
        path = Path(args.evals)
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise StropError(f"{path}: cannot read the evaluator list: {' '.join(str(err).split())}") from err
        loaded = loaded.get("evaluators") if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, list):
            raise StropError(f"{path}: expected a list of evaluators (or a mapping with an `evaluators:` list)")
        specs += loaded
    if args.data:
        spec: dict[str, Any] = {"type": args.metric, "data": args.data}
        if args.metric == "match":
            if args.type not in REFERENCE_TYPES:
                raise StropError(f"eval: dataset type '{args.type}' has no reference replies (use alpaca or chat)")
            spec["format"] = args.type
            spec["max_new_tokens"] = args.max_new_tokens or 32
        elif args.max_new_tokens and args.metric in ("pass_at_k", "win_rate"):
            spec["max_new_tokens"] = args.max_new_tokens
        spec["samples"] = args.show
        spec |= dict(parse_override(item) for item in args.set)
        specs.append(spec)
    return specs


def _print_results(results: dict, data_names: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("evaluator", "metric", "value", title="strop eval")
    for name, result in results.items():
        for key, value in result.metrics.items():
            table.add_row(f"{name} ({data_names.get(name, '')})", key.split("/", 1)[-1], f"{value:.4f}")
    Console().print(table)
    for name, result in results.items():
        for sample in result.samples:
            print(json.dumps({"evaluator": name, **sample}, ensure_ascii=False))


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from strop.evaluation import Subject, build_evaluators
    from strop.evaluation.forgetting import build_general, describe, evaluate_both
    from strop.models.saved import load_for_chat

    specs = target_specs(args)
    # paths in an --evals file are relative to it (then to the working folder, as DATA is)
    base_dir = Path(args.evals).resolve().parent if args.evals else Path.cwd()
    evaluators = build_evaluators(specs, base_dir) if specs else []
    if args.forgetting:
        evaluators.append(build_general(args.forgetting, Path.cwd()))
    model, tokenizer = load_for_chat(args.model, args.trust_remote_code)
    tuned = Subject.of(model, tokenizer, args.batch_size, args.seed)
    if not args.forgetting:
        results = {e.name: e(tuned) for e in evaluators}
        _print_results(results, {s.get("name") or s["type"]: s["data"] for s in specs})
        return {
            "model": args.model,
            "metrics": {k: v for r in results.values() for k, v in r.metrics.items()},
            "samples": {k: r.samples for k, r in results.items()},
        }
    base_model, base_tokenizer = load_for_chat(base_of(args), args.trust_remote_code)
    result = evaluate_both(evaluators, Subject.of(base_model, base_tokenizer, args.batch_size, args.seed), tuned)
    for line in describe(result):
        print(f"forgetting: {line}")
    return {"model": args.model, "base": base_of(args), "forgetting": result}


def base_of(args: argparse.Namespace) -> str:
    """--base, else the base an adapter folder was trained on."""
    if args.base:
        return args.base
    from strop.models.saved import adapter_base, is_adapter_folder

    if is_adapter_folder(Path(args.model)):
        return adapter_base(Path(args.model))
    raise StropError("eval: --forgetting needs --base BASE_MODEL (MODEL is not an adapter folder that names its base)")


def _run(args: argparse.Namespace) -> int:
    if args.tasks:
        from strop.evaluation.harness import run_tasks

        out: dict[str, Any] = run_tasks(
            args.model,
            args.tasks.split(","),
            args.limit,
            args.batch_size,
            args.include_path,
            args.trust_remote_code,
            args.max_new_tokens,
        )
    elif not (args.data or args.evals or args.forgetting):
        raise StropError("eval: give DATA, --evals FILE, --forgetting GENERAL or --tasks T1,T2")
    else:
        out = _evaluate(args)
    if args.out:
        write_text(Path(args.out), json.dumps(out, indent=1, ensure_ascii=False))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model, adapter or merged model (match, pass@k, "
        "preference, win rate, perplexity, forgetting, lm-eval tasks)",
    )
    parser.add_argument("model", help="alias, hub id, model folder or training output_dir")
    parser.add_argument("data", nargs="?", help="file the --metric evaluator reads (alpaca or chat rows for match)")
    parser.add_argument(
        "--metric",
        default="match",
        choices=("match", "pass_at_k", "preference", "win_rate", "perplexity"),
        help="evaluator run on DATA (default: exact and normalised match)",
    )
    parser.add_argument("--type", default="alpaca", help="row format of DATA for match (alpaca or chat)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the --metric evaluator, e.g. --set n=8 --set k=[1,4] --set reward=code",
    )
    parser.add_argument("--evals", help="YAML list of evaluator specs (as under `evaluators:` in a training config)")
    parser.add_argument(
        "--forgetting", metavar="GENERAL", help="general held-out set: score base and MODEL on it and on the target"
    )
    parser.add_argument("--base", help="base model for --forgetting (default: an adapter's own base)")
    parser.add_argument("--tasks", help="comma-separated lm-evaluation-harness tasks (needs pip install lm-eval)")
    parser.add_argument("--limit", type=int, help="lm-eval: at most this many examples per task")
    parser.add_argument("--include-path", help="lm-eval: folder of extra task YAML files")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of sampled generations (pass@k)")
    parser.add_argument("--show", type=int, default=3, help="print this many sample replies per evaluator")
    parser.add_argument("--out", help="write the scores and samples as JSON here")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.set_defaults(func=_run)
