"""`strop moe build CONFIG.yml OUT`: Branch-Train-MiX, E dense fine-tunes of one seed into a Mixtral MoE
(strop/moe/btx.py); train its routers afterwards with `strop train` (README, Mixture of Experts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "moe", help="Mixture-of-Experts tools: build an MoE from dense fine-tunes (Branch-Train-MiX)"
    )
    actions = parser.add_subparsers(dest="moe_action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="combine dense fine-tunes of one seed into a Mixtral-style MoE checkpoint",
        description="mergekit-moe-shaped CONFIG: base_model, gate_mode (hidden|random), "
        "experts_per_token, experts[]: {source_model, positive_prompts, negative_prompts}.",
    )
    build.add_argument("config", metavar="CONFIG", help="MoE build config (YAML)")
    build.add_argument("out", metavar="OUT", help="output model folder")
    build.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    build.set_defaults(func=run_build)
    return parser


def run_build(args: argparse.Namespace) -> int:
    from strop.moe.btx import build_moe, load_build_config

    config = load_build_config(Path(args.config))
    out = build_moe(config, Path(args.out), overwrite=args.overwrite)
    print(
        f"MoE checkpoint ({len(config.experts)} experts, top-{config.experts_per_token}, gate_mode {config.gate_mode}) "
        f"written to {out}"
    )
    return 0
