"""One schema for params.yaml, validated once before any stage does work.

Every stage calls :func:`load_params`; a typo, a wrong type or an out-of-range value is a
:class:`ParamsError` naming the key, the value and what was expected (with a "did you mean"
suggestion for unknown keys).
"""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from .data.datasets import DATASETS
from .data.features import FEATURES, PROTOCOLS, SCALINGS

__all__ = ["ParamsError", "load_params", "validate_params", "DATASET_NAMES", "BACKENDS", "MAX_BITS",
           "FEATURE_NAMES", "PROTOCOL_NAMES"]

#: vocabularies come from their owners: the dataset registry and the protocol/feature module
DATASET_NAMES = tuple(DATASETS)
#: ``features`` (optional, default pixels) and ``protocol.name`` (optional, default standard)
FEATURE_NAMES = FEATURES
PROTOCOL_NAMES = PROTOCOLS
#: datasets whose loader records an official train/test split (``protocol.name: test-train``;
#: MNIST only when its training files are present, checked by the features stage)
OFFICIAL_SPLIT_DATASETS = tuple(n for n, s in DATASETS.items() if s.official_split)
#: keys of the ``protocol`` section
PROTOCOL_KEYS = ("queries_per_class", "train_per_class", "name", "standardize", "validation")
BACKENDS = ("cpu", "cuda")
MAX_BITS = 1024


#: keys of the ``evaluate`` section
EVALUATE_KEYS = ("radius", "topk", "scheduler", "address", "shards")


class ParamsError(ValueError):
    """params.yaml is wrong: the message says which key, what value, what was expected."""


def _int(v, key, lo=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamsError(f"parameter '{key}' must be an integer, got {v!r} ({type(v).__name__})")
    if lo is not None and v < lo:
        raise ParamsError(f"parameter '{key}' must be >= {lo}, got {v}")
    return v


def _num(v, key, lo=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ParamsError(f"parameter '{key}' must be a number, got {v!r} ({type(v).__name__})")
    if lo is not None and v < lo:
        raise ParamsError(f"parameter '{key}' must be >= {lo}, got {v}")
    return v


def _unknown(key, allowed, where=""):
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; expected one of {sorted(allowed)}"
    return ParamsError(f"unknown parameter '{where}{key}'{hint}")


def _choice(v, key, choices):
    if v not in choices:
        raise ParamsError(f"parameter '{key}' is {v!r}; expected one of {list(choices)}")
    return v


def _methods():
    from .methods.base import METHODS, ensure_registry
    ensure_registry()
    return sorted(METHODS)


def validate_params(p: dict) -> dict:
    """Check the whole params dictionary; return it (unchanged) or raise :class:`ParamsError`."""
    from .methods.vdsh import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_MINIMUM
    if not isinstance(p, dict):
        raise ParamsError(f"params.yaml must be a mapping of parameters, got {type(p).__name__}")
    top = {"dataset", "data_dir", "bits", "depth", "width", "seed", "methods", "backend",
           "protocol", "train", "evaluate", "baselines", "features"}
    for k in p:
        if k not in top:
            raise _unknown(k, top)
    for k in ("dataset", "data_dir", "bits", "depth", "width", "seed", "methods", "backend"):
        if k not in p:
            raise ParamsError(f"parameter '{k}' is missing from params.yaml")
    _choice(p["dataset"], "dataset", DATASET_NAMES)
    if not isinstance(p["data_dir"], str) or not p["data_dir"]:
        raise ParamsError(f"parameter 'data_dir' must be a path string, got {p['data_dir']!r}")
    bits = p["bits"]
    if not isinstance(bits, list) or not bits:
        raise ParamsError(f"parameter 'bits' must be a non-empty list of code lengths, got {bits!r}")
    for i, b in enumerate(bits):
        _int(b, f"bits[{i}]", 1)
        if b > MAX_BITS:
            raise ParamsError(f"parameter 'bits[{i}]' is {b}; at most {MAX_BITS} bits are supported")
    if len(set(bits)) != len(bits):
        raise ParamsError(f"parameter 'bits' lists a code length twice: {bits}")
    _int(p["depth"], "depth", 1)
    _int(p["width"], "width", 1)
    _int(p["seed"], "seed", 0)
    methods = p["methods"]
    if not isinstance(methods, list) or not methods:
        raise ParamsError(f"parameter 'methods' must be a non-empty list, got {methods!r}")
    known = _methods()
    for i, m in enumerate(methods):
        _choice(m, f"methods[{i}]", known)
    _choice(p["backend"], "backend", BACKENDS)
    feats = _choice(p.get("features", "pixels"), "features", FEATURE_NAMES)
    if feats == "gist" and not DATASETS[p["dataset"]].images:
        raise ParamsError(f"parameter 'features' is 'gist' but dataset '{p['dataset']}' comes as "
                          f"feature vectors, not images; use features: pixels (the raw vectors)")
    proto = p.get("protocol") or {}
    for k, v in proto.items():
        if k not in PROTOCOL_KEYS:
            raise _unknown(k, PROTOCOL_KEYS, "protocol.")
        if k == "name":
            _choice(v, "protocol.name", PROTOCOL_NAMES)
        elif k == "standardize":
            _choice(v, "protocol.standardize", SCALINGS)
        elif k == "validation":
            if not isinstance(v, bool):
                raise ParamsError(f"parameter 'protocol.validation' must be true or false, got {v!r}")
        elif v != "auto":
            _int(v, f"protocol.{k}", 1)
    if proto.get("name") == "test-train":
        if p["dataset"] not in OFFICIAL_SPLIT_DATASETS:
            raise ParamsError(f"parameter 'protocol.name' is 'test-train' (the official test/train "
                              f"split) but dataset {p['dataset']!r} has none here; only "
                              f"{', '.join(OFFICIAL_SPLIT_DATASETS)} do")
        fixed = [k for k in ("queries_per_class", "train_per_class") if proto.get(k, "auto") != "auto"]
        if fixed:
            raise ParamsError(f"parameter 'protocol.{fixed[0]}' is {proto[fixed[0]]!r}, but protocol "
                              f"'test-train' takes its sizes from the official split: set it to auto")
    train = p.get("train") or {}
    for k, v in train.items():
        if k not in TRAIN_DEFAULTS:
            raise _unknown(k, TRAIN_DEFAULTS, "train.")
        want = TRAIN_DEFAULTS[k]
        if isinstance(want, bool):
            if not isinstance(v, bool):
                raise ParamsError(f"parameter 'train.{k}' must be true or false, got {v!r}")
        elif isinstance(want, str):
            if not isinstance(v, str):
                raise ParamsError(f"parameter 'train.{k}' must be a string, got {v!r}")
            if k in TRAIN_CHOICES:
                _choice(v, f"train.{k}", TRAIN_CHOICES[k])
        elif isinstance(want, int):
            _int(v, f"train.{k}", TRAIN_MINIMUM.get(k, 0))
        else:
            _num(v, f"train.{k}", 0)
    ev = p.get("evaluate") or {}
    for k, v in ev.items():
        if k not in EVALUATE_KEYS:
            raise _unknown(k, EVALUATE_KEYS, "evaluate.")
    _choice(ev.get("scheduler", "local"), "evaluate.scheduler", ("local", "distributed"))
    if ev.get("address") is not None and not isinstance(ev["address"], str):
        raise ParamsError(f"parameter 'evaluate.address' must be a scheduler address such as "
                          f"'tcp://host:8786' or null, got {ev['address']!r}")
    if "shards" in ev:
        _int(ev["shards"], "evaluate.shards", 1)
    if "radius" in ev:
        _int(ev["radius"], "evaluate.radius", 0)
    if ev.get("topk") is not None:
        _int(ev["topk"], "evaluate.topk", 1)
    _check_baselines(p.get("baselines"), known)
    return p


def _check_baselines(sections, known):
    """Every ``baselines.<m>`` names a registered method, and every key in it is one of that
    method's hyperparameters (``depth``, ``width``, ``seed`` are top-level); ``baselines.vdsh``
    stays empty (VDSH's knobs are ``train:``)."""
    if sections is None:
        return
    if not isinstance(sections, dict):
        raise ParamsError("parameter 'baselines' must be a mapping of method -> options")
    from .methods.base import METHODS
    for m, section in sections.items():
        if m not in known:
            raise _unknown(m, known, "baselines.")
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ParamsError(f"parameter 'baselines.{m}' must be a mapping of options, got {section!r}")
        if m == "vdsh":
            if section:
                raise ParamsError(f"parameter 'baselines.vdsh' must be empty ({{}}): VDSH's knobs are the "
                                  f"train: section, got keys {sorted(section)}")
            continue
        allowed = getattr(METHODS[m], "hyperparameters", None)
        if allowed is None:
            continue
        for k in section:
            if k not in allowed():
                raise _unknown(k, allowed(), f"baselines.{m}.")


def load_params(path="params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} does not exist; run from the project root or pass --params")
    try:
        p = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    return validate_params(p)
