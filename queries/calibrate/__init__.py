"""SQL for `reconcile calibrate`, installed with the package as reconcile.queries.calibrate (loaded through reconcile/resources.py)."""
