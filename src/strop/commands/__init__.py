"""CLI command modules, one per command: each exposes add_parser(subparsers)."""
