"""`strop train CONFIG.yml` and `strop quickstart`."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from strop.config import load_config


def _relaunch_args(args: argparse.Namespace) -> list[str]:
    """The same `strop train` command line, without --nproc, for each torchrun worker."""
    argv = ["train", str(Path(args.config).resolve())]
    for item in args.set:
        argv += ["--set", item]
    if args.output_dir:
        argv += ["--output-dir", args.output_dir]
    argv += [
        flag
        for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("--dry-run", args.dry_run))
        if on
    ]
    return argv


def _train(args: argparse.Namespace) -> int:
    from strop.runtime import distributed
    from strop.train.loop import train

    overrides = list(args.set)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    cfg, base_dir = load_config(args.config, overrides)
    if getattr(args, "nproc", 1) > 1 and not distributed.launched():  # validated once, then N workers
        return distributed.launch(args.nproc, _relaunch_args(args))
    train(cfg, base_dir, resume=args.resume, overwrite=args.overwrite, dry_run=args.dry_run)
    return 0


def quickstart_config() -> Path:
    return Path(str(resources.files("strop") / "examples" / "quickstart" / "quickstart.yml"))


def _quickstart(args: argparse.Namespace) -> int:
    args.config = str(quickstart_config())
    args.resume, args.overwrite = False, True
    return _train(args)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config")
    parser.add_argument("config", help="training config (YAML, Axolotl key names)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output_dir")
    parser.add_argument("--dry-run", action="store_true", help="validate, load data, print the plan; train nothing")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train on N processes (GPUs) with FSDP2: re-launches itself under torchrun",
    )
    parser.set_defaults(func=_train)

    quick = subparsers.add_parser("quickstart", help="LoRA-tune the embedded SmolLM2 on the bundled demo task")
    quick.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    quick.add_argument("--output-dir", default="outputs/quickstart", help="where the adapter goes")
    quick.add_argument("--dry-run", action="store_true", help="print the plan only")
    quick.set_defaults(func=_quickstart)
