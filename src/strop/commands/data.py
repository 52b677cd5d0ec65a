"""`strop data ...`: generate, judge, filter and mix datasets that `strop train` reads unchanged; and
`strop generate`, the teacher-answers command it grew from (`strop data generate` is the same).

Every subcommand writes JSONL plus `<out>.card.json`; generators resume after a kill (`--restart` to
start over). Models are loaded once per target even when the same one plays several roles.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from strop.errors import StropError

if TYPE_CHECKING:
    from strop.datagen.sink import Sink


class Models:
    """Backends by target, so a policy that is also the judge is loaded once."""

    def __init__(self, max_new_tokens: int, endpoint_model: str | None = None):
        self.cache: dict[str, object] = {}
        self.max_new_tokens, self.endpoint_model = max_new_tokens, endpoint_model

    def get(self, target: str):
        from strop.judge import make_backend

        if target not in self.cache:
            self.cache[target] = make_backend(target, self.max_new_tokens, self.endpoint_model)
        return self.cache[target]

    def judge(self, args: argparse.Namespace):
        from strop.judge import LLMJudge, read_rubric

        return LLMJudge(
            self.get(args.judge),
            read_rubric(args.rubric),
            args.scale[0],
            args.scale[1],
            both_orders=not args.one_order,
            logprobs=args.judge_logits,
        )


def _models(args: argparse.Namespace) -> Models:
    return Models(args.max_new_tokens, getattr(args, "endpoint_model", None))


def _filters(args: argparse.Namespace, models: Models) -> list:
    from strop.datagen import filters as f

    stages: list = []
    if args.min_words or args.max_words is not None:
        stages.append(f.Length(args.min_words, args.max_words, args.length_of))
    if args.language:
        stages.append(f.Language(args.language))
    if args.exact_dedup or args.near_dedup is not None:
        stages.append(f.ExactDedup())
    if args.near_dedup is not None:
        stages.append(f.NearDedup(args.near_dedup, args.shingle, args.num_perm, args.seed))
    if args.decontaminate:
        stages.append(f.Decontaminate(args.decontaminate, args.contamination_ngram, args.contamination_threshold))
    if args.min_score is not None:
        if not args.judge:
            raise StropError("data filter: --min-score needs --judge MODEL_OR_URL")
        stages.append(f.JudgeScore(models.judge(args), args.min_score))
    if args.difficulty_model:
        from strop.datagen.verified import Verifier, difficulty_filter, parse_reward_specs

        rewards = parse_reward_specs(args.reward)
        verifier = Verifier(
            models.get(args.difficulty_model), rewards, args.samples, args.temperature, args.pass_score, seed=args.seed
        )
        stages.append(difficulty_filter(verifier, *args.pass_range))
    return stages


def _run_filter(args: argparse.Namespace) -> int:
    from strop.datagen.diversity import DiversitySelect, model_embedder
    from strop.datagen.filtering import print_report, run_filters

    stages = _filters(args, _models(args))
    selector = None
    if args.select:
        selector = (
            DiversitySelect(args.select, args.clusters, args.seed, model_embedder(args.embed_model), args.embed_model)
            if args.embed_model
            else DiversitySelect(args.select, args.clusters, args.seed)
        )
    if not stages and selector is None:
        raise StropError("data filter: no filter chosen (see `strop data filter --help`)")
    report = run_filters(args.input, args.out, stages, selector, args.rejects, args.batch_size, resume=not args.restart)
    print_report(report)
    print(f"wrote {args.out} ({report.kept} rows; card {args.out}.card.json)")
    return 0


def _run_mix(args: argparse.Namespace) -> int:
    from strop.datagen.mixture import mix

    summary = mix(args.sources, args.out, args.total, args.seed, args.temperature)
    for path, info in summary.items():
        print(f"{path}: {info['drawn']} of {info['rows']} rows{' (repeated)' if info['repeated'] else ''}")
    print(f"wrote {args.out}")
    return 0


def _generator_options(args: argparse.Namespace) -> dict:
    """The options every generator takes from `_generation_options`, as its keyword arguments."""
    return dict(
        out=args.out, temperature=args.temperature, seed=args.seed, batch_size=args.batch_size, resume=not args.restart
    )


def _wrote(sink: Sink, unit: str, dataset_type: str) -> int:
    print(f"wrote {sink.out} ({sink.written} {unit}, dataset type: {dataset_type}); {dict(sink.counts)}")
    return 0


def _run_rlaif(args: argparse.Namespace, all_pairs: bool = False) -> int:
    from strop.datagen.feedback import rlaif

    if args.samples < 2:  # checked before any model loads
        raise StropError(
            f"data {'compare' if all_pairs else 'rlaif'}: --samples must be at least 2, got {args.samples}"
        )
    models = _models(args)
    policy, judge = models.get(args.policy), models.judge(args)
    options = _generator_options(args)
    sink = rlaif(policy, judge, args.prompts, n=args.samples, fmt=args.format, all_pairs=all_pairs, **options)
    return _wrote(sink, "rows", args.format)


def _generate_with(args: argparse.Namespace, generator: Callable[..., Sink], *inputs: Any, **settings: Any) -> Sink:
    """Run a generator that samples from `--model` on its inputs, with the shared generation options."""
    return generator(_models(args).get(args.model), *inputs, **settings, **_generator_options(args))


def _run_constitutional(args: argparse.Namespace) -> int:
    from strop.datagen.feedback import constitutional

    return _wrote(_generate_with(args, constitutional, args.constitution, args.prompts), "pairs", "dpo")


def _run_self_instruct(args: argparse.Namespace) -> int:
    from strop.datagen.instruct import self_instruct

    settings = dict(count=args.count, shots=args.shots, max_similarity=args.max_similarity, max_rounds=args.max_rounds)
    return _wrote(_generate_with(args, self_instruct, args.seeds, **settings), "rows", "alpaca")


def _run_evol(args: argparse.Namespace) -> int:
    from strop.datagen.instruct import evol_instruct

    sink = _generate_with(args, evol_instruct, args.prompts, operators=args.operators, rounds=args.rounds)
    return _wrote(sink, "rows", "alpaca")


def _run_traces(args: argparse.Namespace) -> int:
    from strop.datagen.verified import REASONING_SYSTEM, Verifier, parse_reward_specs, reasoning_traces

    rewards = parse_reward_specs(args.reward)  # a bad spec fails before the model loads
    verifier = Verifier(
        _models(args).get(args.teacher),
        rewards,
        args.samples,
        args.temperature,
        args.pass_score,
        args.system or REASONING_SYSTEM,
        args.seed,
    )
    sink = reasoning_traces(verifier, args.prompts, args.out, args.keep, args.batch_size, not args.restart)
    return _wrote(sink, "rows", "chat")


def _run_generate(args: argparse.Namespace) -> int:
    from strop.datagen.distill import generate_dataset

    path = generate_dataset(
        args.teacher,
        args.prompts,
        args.out,
        args.max_new_tokens,
        args.temperature,
        args.system,
        resume=not getattr(args, "restart", False),
    )
    print(f"wrote {path} (dataset type: chat)")
    return 0


def _generation_options(parser: argparse.ArgumentParser, temperature: float = 1.0, batch_size: int = 4) -> None:
    parser.add_argument("--out", required=True, help="output JSONL (a card is written beside it)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=temperature, help="sampling temperature (0 = greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help="rows or prompts per batch (a resume point after each)"
    )
    parser.add_argument("--restart", action="store_true", help="ignore a killed run's partial output")


def _judge_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--judge",
        required=required,
        help="judge: a model strop loads, or an OpenAI-compatible URL (http://host:port/v1; key from OPENAI_API_KEY)",
    )
    parser.add_argument("--endpoint-model", help="model name to send to a judge URL")
    parser.add_argument("--rubric", help="text file with the rubric or constitution the judge applies")
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(1, 10),
        metavar=("LOW", "HIGH"),
        help="pointwise score range (default 1 10)",
    )
    parser.add_argument(
        "--judge-logits",
        action="store_true",
        help="a local judge's verdict from its logits "
        "(P(A) vs P(B) after 'Winner:'), for small judges whose free text follows no format",
    )
    parser.add_argument(
        "--one-order",
        action="store_true",
        help="compare in one order only (default: both orders, against position bias)",
    )


def _reward_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reward",
        action="append",
        help="verifiable reward: a type of strop.rl.rewards "
        "(math, match, code, ...) or a JSON spec; repeatable (default math)",
    )
    parser.add_argument("--samples", type=int, default=4, help="answers sampled per prompt (k)")
    parser.add_argument("--pass-score", type=float, default=1.0, help="reward an answer needs to pass")


def _add_filter(sub) -> None:
    p = sub.add_parser("filter", help="dedup, decontaminate, length/language/judge/difficulty filters, diversity")
    p.add_argument("input", help="dataset file (any format strop trains on)")
    p.add_argument("--rejects", help="JSONL of dropped rows with the filter and reason")
    p.add_argument("--min-words", type=int, default=0)
    p.add_argument("--max-words", type=int)
    p.add_argument("--length-of", choices=("prompt", "response", "row"), default="response")
    p.add_argument("--language", nargs="+", help="keep rows in these languages (ISO 639-1, e.g. en fr)")
    p.add_argument("--exact-dedup", action="store_true", help="drop rows whose normalised text repeats")
    p.add_argument("--near-dedup", type=float, metavar="JACCARD", help="drop near duplicates (MinHash LSH), e.g. 0.8")
    p.add_argument("--shingle", type=int, default=5, help="words per shingle for near-dedup")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash hash functions")
    p.add_argument(
        "--decontaminate", nargs="+", metavar="EVAL_FILE", help="evaluation file(s) to decontaminate against"
    )
    p.add_argument("--contamination-ngram", type=int, default=13)
    p.add_argument(
        "--contamination-threshold",
        type=float,
        default=0.0,
        help="share of a row's n-grams found in the eval set that drops it (0: any shared n-gram)",
    )
    _judge_options(p, required=False)
    p.add_argument("--min-score", type=float, help="drop rows the judge scores below this")
    p.add_argument("--difficulty-model", help="model whose pass rate calibrates difficulty")
    _reward_options(p)
    p.add_argument("--pass-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"))
    p.add_argument("--select", type=int, metavar="N", help="keep N rows chosen evenly across clusters")
    p.add_argument("--clusters", type=int, default=8)
    p.add_argument(
        "--embed-model",
        help="embed rows with this model's mean-pooled hidden states for --select "
        "(default: hashed word n-grams, no model)",
    )
    _generation_options(p, batch_size=16)
    p.set_defaults(func=_run_filter)


def _add_generators(sub) -> None:
    p = sub.add_parser("mix", help="a task mixture: rows drawn from several datasets by weight, seeded")
    p.add_argument("sources", nargs="+", help="FILE[:WEIGHT] (no weight: its row count)")
    p.add_argument("--out", required=True)
    p.add_argument("--total", type=int, required=True, help="rows in the mixture")
    p.add_argument("--temperature", type=float, default=1.0, help="share ∝ weight^(1/T); T > 1 flattens")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_mix)
    for name, helptext, all_pairs in (
        ("rlaif", "sample replies, a judge picks: preference pairs (DPO/ORPO) or KTO rows", False),
        ("compare", "comparative distillation: all C(N,2) judged pairs of N teacher samples", True),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("prompts")
        p.add_argument("--policy", "--teacher", dest="policy", required=True, help="model that samples the replies")
        _judge_options(p, required=True)
        p.add_argument("--samples", type=int, default=2 if name == "rlaif" else 4, help="replies per prompt (≥ 2)")
        p.add_argument("--format", choices=("dpo", "kto"), default="dpo")
        _generation_options(p)
        p.set_defaults(func=lambda a, all_pairs=all_pairs: _run_rlaif(a, all_pairs))
    p = sub.add_parser("constitutional", help="Constitutional AI: critique and revise → (revised, original) pairs")
    p.add_argument("prompts")
    p.add_argument("--model", required=True)
    p.add_argument("--constitution", required=True, help="text file of principles (one per paragraph or line)")
    _generation_options(p, temperature=0.0)
    p.set_defaults(func=_run_constitutional)
    p = sub.add_parser("self-instruct", help="Self-Instruct: new instructions from a seed set (alpaca rows)")
    p.add_argument("seeds", help="seed instructions (prompt, instruction or messages rows)")
    p.add_argument("--model", required=True)
    p.add_argument("--count", type=int, required=True, help="new rows to write")
    p.add_argument("--shots", type=int, default=3, help="instructions shown per request")
    p.add_argument("--max-similarity", type=float, default=0.7, help="ROUGE-L above which an instruction is dropped")
    p.add_argument("--max-rounds", type=int, help="stop after this many batches even if short of --count")
    _generation_options(p)
    p.set_defaults(func=_run_self_instruct)
    p = sub.add_parser("evol-instruct", help="Evol-Instruct: evolve instructions, drop failed evolutions")
    p.add_argument("prompts")
    p.add_argument("--model", required=True)
    p.add_argument("--operators", nargs="+", help="constraints deepen reasoning concretize breadth (default all)")
    p.add_argument("--rounds", type=int, default=1)
    _generation_options(p, temperature=0.7)
    p.set_defaults(func=_run_evol)
    p = sub.add_parser("traces", help="reasoning traces by rejection sampling with a verifiable reward (chat rows)")
    p.add_argument("prompts", help="rows with the prompt and its reference (e.g. answer)")
    p.add_argument("--teacher", required=True)
    _reward_options(p)
    p.add_argument("--keep", type=int, default=1, help="passing answers kept per prompt")
    p.add_argument("--system", help="reasoning instruction put before each prompt")
    _generation_options(p)
    p.set_defaults(func=_run_traces)


def _add_generate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", help="alias, hub id, model folder or adapter folder")
    parser.add_argument("prompts", help="JSONL/JSON/CSV/Parquet with prompt, instruction or messages fields")
    parser.add_argument("--out", required=True, help="output JSONL (chat format)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--system", help="system message, e.g. asking for step-by-step reasoning")
    parser.add_argument("--restart", action="store_true", help="ignore a killed run's partial output")
    parser.set_defaults(func=_run_generate)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="generate, judge, filter and mix training data")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _add_filter(sub)
    _add_generators(sub)
    _add_generate(sub.add_parser("generate", help="a teacher answers prompts: a chat dataset"))
    _add_generate(subparsers.add_parser("generate", help="have a teacher model answer prompts, writing a chat dataset"))
