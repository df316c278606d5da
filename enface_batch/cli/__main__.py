"""`python -m enface_batch.cli`: the commands without main()'s exit handling (as `python cli.py` ran them)."""

from . import app

app()
