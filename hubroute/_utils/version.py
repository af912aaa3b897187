"""The package version (kept apart so every layer can read it without importing ``hubroute``)."""

__version__ = "0.1.0"
