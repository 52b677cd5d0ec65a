from strop.cli import entry

entry()
