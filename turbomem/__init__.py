"""TurboMem: a lock-free huge-page-backed object pool (placeholder package docstring)."""
