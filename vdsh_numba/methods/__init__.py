"""Hashing methods: the registry and capabilities (base), the baselines, and VDSH."""
