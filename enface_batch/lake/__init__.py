"""Table schemas and the only code that writes table files."""
