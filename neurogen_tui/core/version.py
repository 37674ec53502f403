"""The package's version, in one place below every room (run.json records it)."""

__version__ = "0.1.0"
