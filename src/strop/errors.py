"""One exception type for every user-facing failure.

The CLI turns a StropError into a one-paragraph message and exit status 2, with no traceback: a bad
config key or a malformed dataset line is the user's to fix, not a crash to debug.
"""


class StropError(Exception):
    """A failure caused by the user's input (config, data, paths), with a message that says how to fix it."""
