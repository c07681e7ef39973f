"""GPU suite: run with ``python -m pytest tests/gpu -p no:cacheprovider -o addopts=""`` (skipped without CUDA)."""
