"""reconcile: event-loss reconciliation."""

__version__ = "0.1.0"
