"""reconcile: event-loss reconciliation."""

# Raised whenever what a run decides or writes changes (a rule, a vocabulary, an output's columns): a run's manifest
# records it, and `verify` of a run made by another version says to verify with that one.
__version__ = "0.4.0"
