"""Metrics computed on embeddings or predictions (NumPy, host side)."""
