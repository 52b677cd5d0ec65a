"""strop's CLI commands, one module each: `add_parser(subparsers)` adds the parser and sets `func`."""
