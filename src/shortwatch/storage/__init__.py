"""Storage backends: the embedded SQLite store (default)."""
