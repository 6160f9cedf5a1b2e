"""SQL installed with the package as reconcile.queries.export (loaded through reconcile/resources.py)."""
