"""Prefect flows: thin orchestration over enface_batch (scan, enrol, dedup, reindex)."""
