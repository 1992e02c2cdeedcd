"""Hamming search and retrieval metrics (CPU kernels, CUDA twins, Dask shards)."""
