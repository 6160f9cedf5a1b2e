"""`python -m reconcile`: the same command as `reconcile`."""

from .cli import main

main(prog_name="reconcile")
