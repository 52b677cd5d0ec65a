"""`strop config`: print the config schema, or validate a config and print it with defaults filled in."""

from __future__ import annotations

import argparse

from strop.config import config_to_yaml, load_config, schema_rows


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.axolotl_keys:
        from strop.axolotl_keys import compat_rows

        print("| Axolotl key | strop | why / how |\n|---|---|---|")
        for key, status, why in compat_rows():
            print(f"| `{key}` | {status} | {why.replace('|', '/')} |")
        return 0
    if args.schema:
        table = Table("key", "type", "default", "help", title="strop config keys")
        for row in schema_rows():
            table.add_row(*row)
        Console(width=200).print(table)
        return 0
    cfg, _ = load_config(args.config, args.set)
    print(config_to_yaml(cfg), end="")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print the config schema, or validate and print a resolved config")
    parser.add_argument("config", nargs="?", help="config YAML to validate and print with defaults filled in")
    parser.add_argument("--schema", action="store_true", help="print every key with its type, default and help")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key")
    parser.add_argument(
        "--axolotl-keys",
        action="store_true",
        help="print the table of Axolotl keys and what strop does with each (Markdown)",
    )
    parser.set_defaults(
        func=lambda a: (
            _run(a)
            if (a.schema or a.config or a.axolotl_keys)
            else parser.error("give CONFIG, --schema or --axolotl-keys")
        )
    )
