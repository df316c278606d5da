"""Errors of the lake layer that callers report to users (kept free of heavy imports: the CLI imports it)."""

from __future__ import annotations


class LakeCorrupt(RuntimeError):
    """A table of the lake cannot be read safely; the message names the table, the file and what to do."""
