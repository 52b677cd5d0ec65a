"""`strop spectrum MODEL [--top-fraction 0.25] [--out FILE.yml]`: rank a model's weight matrices by
signal-to-noise ratio (see strategies/spectrum.py) and write the `spectrum_unfrozen_parameters` list that
`adapter: spectrum` trains. The scan is a singular-value decomposition per matrix, on the CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from strop.models import load_model, resolve_model_path
    from strop.strategies.layers import layer_type
    from strop.strategies.spectrum import scan_model, select_top

    path = resolve_model_path(args.model, "model")
    model = load_model(path, trust_remote_code=args.trust_remote_code)
    results = scan_model(model)
    chosen = set(select_top(results, args.top_fraction))
    table = Table(
        title=f"strop spectrum: {args.model} (SNR against the Marchenko–Pastur edge; top "
        f"{args.top_fraction:.0%} of each layer type trains)"
    )
    for column in ("layer type", "rank", "matrix", "shape", "SNR", "above edge", "train"):
        table.add_column(column, justify="right" if column in ("rank", "SNR", "above edge") else "left")
    groups: dict[str, list] = {}
    for item in results:
        groups.setdefault(layer_type(item.name), []).append(item)
    for kind, items in groups.items():
        for rank, item in enumerate(sorted(items, key=lambda i: -i.snr), start=1):
            table.add_row(
                kind if rank == 1 else "",
                str(rank),
                item.name,
                "×".join(map(str, item.shape)),
                f"{item.snr:.3f}",
                str(item.above),
                "yes" if item.name in chosen else "",
            )
    Console(width=160).print(table)
    total = sum(p.numel() for p in model.parameters())
    params = dict(model.named_parameters())
    share = sum(params[n].numel() for n in chosen if n in params) / total
    print(f"{len(chosen)} of {len(results)} matrices selected: {share:.1%} of the parameters train")
    if args.out:
        header = (
            f"# strop spectrum {args.model} --top-fraction {args.top_fraction}\n"
            "# merge these keys into a training config\n"
        )
        body = {"adapter": "spectrum", "spectrum_unfrozen_parameters": sorted(chosen, key=list(params).index)}
        Path(args.out).write_text(header + yaml.safe_dump(body, sort_keys=False))
        print(f"wrote {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("spectrum", help="rank weight matrices by SNR and write the list Spectrum trains")
    parser.add_argument("model", help="hub id, local HF folder, GGUF file or smollm2-135m-instruct")
    parser.add_argument(
        "--top-fraction", type=float, default=0.25, help="share of each layer type to train (default 0.25)"
    )
    parser.add_argument("--out", help="write `adapter: spectrum` + spectrum_unfrozen_parameters to this YAML file")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    parser.set_defaults(func=_run)
