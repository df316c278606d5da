"""The Enface operations as functions; the CLI, flows and endpoint only call these."""
