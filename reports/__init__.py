"""Jinja2 templates, installed with the package as reconcile.reports (loaded through reconcile/resources.py)."""
