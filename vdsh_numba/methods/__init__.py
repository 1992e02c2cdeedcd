"""Hashing methods: the contract and registry (:mod:`.base`), VDSH (:mod:`.vdsh`) and the
baselines (:mod:`.baselines`). Importing this package (or any module in it) registers every
method; the pipeline asks for one by name and never names a method itself."""
from .base import METHODS, HashingModel, load_model, make_method
from . import vdsh, baselines  # noqa: F401  (importing them registers their methods)

__all__ = ["METHODS", "HashingModel", "make_method", "load_model", "method_names"]


def method_names() -> list:
    """The registered methods' names, sorted."""
    return sorted(METHODS)
