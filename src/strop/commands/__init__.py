"""One module per `strop` command: each exposes add_parser(subparsers) and sets func."""
