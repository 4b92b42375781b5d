"""Shared test parts, importable by tests and scripts (with `tests/` on the path): data, server, processes, gates."""
