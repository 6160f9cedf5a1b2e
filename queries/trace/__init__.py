"""SQL and vocabularies, installed with the package as reconcile.queries.trace (loaded through reconcile/resources.py)."""
