"""reconcile: event-loss reconciliation."""

# Raised whenever what a run decides or writes changes (a rule, a vocabulary, an output's columns): a run's manifest
# records it, and `verify` of a run made by another version says to verify with that one.
__version__ = "0.11.0"

import os

# pyarrow's allocator (mimalloc 3) hands the pages a batch freed back to the OS a second later (its default purge
# delay); a run frees and takes gigabytes again batch after batch, and every page taken again is faulted in and zeroed
# by the kernel: a tenth of the engine's CPU at 10 M events. Kept for a while instead (run.py still hands them all
# back before the engine, release_unused). mimalloc reads it when libarrow loads: so here, before pyarrow is imported
# (imported first, pyarrow keeps its default; processes started later inherit the setting); a value set wins.
ALLOCATOR = {"MIMALLOC_PURGE_DELAY": "100000"}  # milliseconds
for _name, _value in ALLOCATOR.items():
    os.environ.setdefault(_name, _value)
