"""SQL and vocabularies, installed with the package as reconcile.queries.state (loaded through reconcile/resources.py)."""
