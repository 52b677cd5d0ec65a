"""The CLI's commands, one module each (add_parser(subparsers) sets `func`)."""
