"""Hyperparameter plumbing shared by every baseline: params.yaml -> ``__init__`` -> JSON.

Each baseline's ``__init__`` keyword arguments *are* its hyperparameters (scikit-learn
convention). :class:`ParamsMixin` builds a model from the full params.yaml dictionary
(``depth``, ``width`` and ``seed`` from the top level, everything else from the method's
own section ``<method>:``, defaults from the ``__init__`` signature) and returns the same
keywords from ``get_params``.
"""
from __future__ import annotations

import inspect

import numpy as np

__all__ = ["ParamsMixin", "check_positive", "check_nonnegative", "signs"]

#: hyperparameters read from the top level of params.yaml (shared with VDSH)
TOP_LEVEL = ("depth", "width", "seed")


def _coerce(name, value, default):
    """Coerce a params.yaml value to the type of its default (PyYAML reads ``1e-5`` as a str)."""
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be true or false, got {value!r}")
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, (bool, np.bool_)) or float(value) != int(float(value)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        return int(float(value))
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, got {value!r}") from None
    if isinstance(default, str):
        return str(value)
    return value


class ParamsMixin:
    """``from_params`` / ``get_params`` derived from the ``__init__`` signature."""

    @classmethod
    def _hyper_defaults(cls) -> dict:
        sig = inspect.signature(cls.__init__)
        return {k: p.default for k, p in sig.parameters.items() if k not in ("self", "bits")}

    @classmethod
    def section_defaults(cls) -> dict:
        """The keys the method's section ``<method>:`` may hold, with their defaults
        (``depth``/``width``/``seed`` are top-level)."""
        return {k: d for k, d in cls._hyper_defaults().items() if k not in TOP_LEVEL}

    @classmethod
    def from_params(cls, bits: int, params: dict):
        """Build from the full params.yaml dict: ``depth``/``width``/``seed`` from the top
        level, the rest from the section ``<method_name>:`` (missing keys take the defaults)."""
        defaults = cls._hyper_defaults()
        section = params.get(cls.method_name) or {}
        if not isinstance(section, dict):
            raise TypeError(f"{cls.method_name} must be a mapping, got {section!r}")
        unknown = sorted(set(section) - (set(defaults) - set(TOP_LEVEL)))
        if unknown:
            allowed = sorted(set(defaults) - set(TOP_LEVEL))
            raise ValueError(f"{cls.method_name}: unknown key(s) {unknown}; "
                             f"expected some of {allowed} (depth, width, seed are top-level)")
        kw = {}
        for k, d in defaults.items():
            src = params if k in TOP_LEVEL else section
            if k in src:
                kw[k] = _coerce(k if k in TOP_LEVEL else f"{cls.method_name}.{k}",
                                src[k], d)
        return cls(bits=bits, **kw)

    def get_params(self) -> dict:
        out = {"bits": int(self.bits)}
        for k in self._hyper_defaults():
            v = getattr(self, k)
            out[k] = v.item() if isinstance(v, np.generic) else v
        return out


def check_positive(name, value, integer=False):
    if integer and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def check_nonnegative(name, value, integer=False):
    if integer and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def signs(U):
    """``sign`` in {-1, +1} with the code-packing rule (:mod:`vdsh_numba.codes`): +1 where
    ``U > 0``, -1 elsewhere (so 0 maps to -1, exactly as it packs)."""
    return np.where(U > 0, 1.0, -1.0)
