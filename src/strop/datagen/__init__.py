"""Data you can trust: generate, judge, filter and mix datasets that `strop train` reads unchanged.

Every writer streams rows to a staged file that survives a kill (see `sink.py`) and leaves a card
(counts, filters, seeds, models) beside its output; every filter says how many rows it dropped and why.
"""
