"""Maintainers' tools (run by make targets), not part of the app or the CLI."""
