"""SQL and vocabularies, installed with the package as reconcile.queries (loaded through reconcile/resources.py)."""
