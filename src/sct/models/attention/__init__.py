"""Attention kinds, one per file; each maps tokens ``(..., N, C)`` to ``(..., N, C)``."""
