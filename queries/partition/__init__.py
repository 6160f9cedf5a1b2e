"""SQL and vocabularies, installed with the package as reconcile.queries.partition (loaded through reconcile/resources.py)."""
