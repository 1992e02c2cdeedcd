"""params.yaml -> one resolved, read-only config, checked once at the boundary.

:func:`load_params` (the DVC stages, the ``vdsh`` command) and :func:`resolve_params` (the
studies, ``vdsh compare``) validate the whole dictionary -- a typo, a wrong type or an
out-of-range value is a :class:`ParamsError` naming the key, the value and what was expected,
with a "did you mean" for unknown keys -- and fill every default into a :class:`Config`:
``protocol`` with the dataset's per-class sizes, ``evaluate``, and one section per registered
method (its knobs, from the method's own ``section_defaults()``). No stage restates a default.

The vocabularies come from their owners: datasets from the dataset registry
(:data:`vdsh_numba.data.datasets.DATASETS`), features, protocols and scalings from
:mod:`vdsh_numba.data.features`, methods and their knobs from the method registry
(:mod:`vdsh_numba.methods`). Each method's knobs live in a top-level section named after it
(``vdsh:``, ``dtsh:``, ...), so a DVC train stage depends on its own method's section only.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from ..data.datasets import DATASETS
from ..data.features import FEATURES, PROTOCOLS, SCALINGS, resolve_protocol
from ..methods import METHODS, method_names

__all__ = ["ParamsError", "Config", "load_params", "resolve_params", "as_config", "validate_params",
           "thaw", "DATASET_NAMES", "BACKENDS", "MAX_BITS", "FEATURE_NAMES", "PROTOCOL_NAMES",
           "SHARED_KEYS", "EVALUATE_DEFAULTS"]

#: vocabularies come from their owners: the dataset registry and the protocol/feature module
DATASET_NAMES = tuple(DATASETS)
FEATURE_NAMES = FEATURES
PROTOCOL_NAMES = PROTOCOLS
#: datasets whose loader records an official train/test split (``protocol.name: test-train``;
#: MNIST only when its training files are present, checked by the features stage)
OFFICIAL_SPLIT_DATASETS = tuple(n for n, s in DATASETS.items() if s.official_split)
#: keys of the ``protocol`` section and their defaults (``auto``: the dataset's own sizes)
PROTOCOL_DEFAULTS = {"name": "standard", "validation": False, "queries_per_class": "auto",
                     "train_per_class": "auto", "standardize": "global"}
#: keys of the ``evaluate`` section and their defaults
EVALUATE_DEFAULTS = {"radius": 2, "topk": None, "scheduler": "local", "address": None, "shards": 4}
BACKENDS = ("cpu", "cuda")
MAX_BITS = 1024
#: the top-level keys every method may read (besides its own section)
SHARED_KEYS = ("dataset", "data_dir", "features", "bits", "depth", "width", "seed", "methods",
               "backend", "protocol", "evaluate")
REQUIRED = ("dataset", "data_dir", "bits", "depth", "width", "seed", "methods", "backend")
OPTIONAL_DEFAULTS = {"features": "pixels"}
#: sections of earlier versions, refused with a pointer to where their keys went
MOVED = {"train": "VDSH's knobs are the section 'vdsh:' now (e.g. dvc exp run -S vdsh.sweeps=80)",
         "baselines": "each method's knobs are a top-level section named after it now "
                      "(e.g. 'dtsh: {lr: 0.003}', dvc exp run -S dtsh.lr=0.003)"}


class ParamsError(ValueError):
    """params.yaml is wrong: the message says which key, what value, what was expected."""


class Config(dict):
    """A resolved params.yaml: every default filled in, read-only all the way down (sections
    are Configs, lists are tuples). Reads like a dict; :func:`thaw` gives a plain, mutable copy
    (for ``yaml.safe_dump`` or to derive another config, which goes through
    :func:`resolve_params` again)."""

    def _read_only(self, *args, **kwargs):
        raise TypeError("a resolved config is read-only: change params.yaml (dvc exp run -S key=value) "
                        "or resolve_params() a modified thaw(config)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    @property
    def source(self) -> dict:
        """A plain copy of the params this config was resolved from. Derive another config from
        it (:func:`resolve_params` of a modified source), never from the resolved values:
        ``protocol`` sizes ``auto`` depend on the dataset."""
        return thaw(getattr(self, "source_params", self))

    def __reduce__(self):  # pickle/deepcopy without __setitem__
        return (Config, (dict(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _freeze(x):
    if isinstance(x, dict):
        return Config({k: _freeze(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    return x


def thaw(x):
    """A plain, mutable deep copy of a :class:`Config` (dicts and lists)."""
    if isinstance(x, dict):
        return {k: thaw(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [thaw(v) for v in x]
    return x


def _int(v, key, lo=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ParamsError(f"parameter '{key}' must be an integer, got {v!r} ({type(v).__name__})")
    if lo is not None and v < lo:
        raise ParamsError(f"parameter '{key}' must be >= {lo}, got {v}")
    return v


def _num(v, key, lo=None):
    if isinstance(v, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            raise ParamsError(f"parameter '{key}' must be a number, got {v!r} (str)") from None
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


def _typed(v, key, default):
    """``v`` checked (and coerced) against the type of its ``default``."""
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ParamsError(f"parameter '{key}' must be true or false, got {v!r}")
        return v
    if isinstance(default, str):
        if not isinstance(v, str):
            raise ParamsError(f"parameter '{key}' must be a string, got {v!r}")
        return v
    if isinstance(default, int):
        return _int(v, key)
    if isinstance(default, float):
        return float(_num(v, key))
    return v  # no default type to check against (e.g. None): the method checks it


def _list(v, key):
    if not isinstance(v, (list, tuple)) or not v:
        raise ParamsError(f"parameter '{key}' must be a non-empty list, got {v!r}")
    return list(v)


def _method_section(m, section):
    """Method ``m``'s section, every key known and typed like its default; defaults filled."""
    cls = METHODS[m]
    defaults, choices, least = cls.section_defaults(), cls.section_choices(), cls.section_minimums()
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ParamsError(f"parameter '{m}' must be a mapping of {m}'s options, got {section!r}")
    out = dict(defaults)
    for k, v in section.items():
        if k not in defaults:
            raise _unknown(k, defaults, f"{m}.")
        out[k] = _typed(v, f"{m}.{k}", defaults[k])
        if k in choices:
            _choice(out[k], f"{m}.{k}", choices[k])
        if k in least and out[k] < least[k]:
            raise ParamsError(f"parameter '{m}.{k}' must be >= {least[k]}, got {out[k]}")
    return out


def _protocol(p):
    proto = p.get("protocol") or {}
    if not isinstance(proto, dict):
        raise ParamsError(f"parameter 'protocol' must be a mapping, got {proto!r}")
    for k, v in proto.items():
        if k not in PROTOCOL_DEFAULTS:
            raise _unknown(k, PROTOCOL_DEFAULTS, "protocol.")
        if k == "name":
            _choice(v, "protocol.name", PROTOCOL_NAMES)
        elif k == "standardize":
            _choice(v, "protocol.standardize", SCALINGS)
        elif k == "validation":
            if not isinstance(v, bool):
                raise ParamsError(f"parameter 'protocol.validation' must be true or false, got {v!r}")
        elif v not in ("auto", None):
            _int(v, f"protocol.{k}", 1)
    proto = {**PROTOCOL_DEFAULTS, **proto}
    if proto["name"] == "test-train":
        if p["dataset"] not in OFFICIAL_SPLIT_DATASETS:
            raise ParamsError(f"parameter 'protocol.name' is 'test-train' (the official test/train "
                              f"split) but dataset {p['dataset']!r} has none here; only "
                              f"{', '.join(OFFICIAL_SPLIT_DATASETS)} do")
        fixed = [k for k in ("queries_per_class", "train_per_class") if proto[k] not in ("auto", None)]
        if fixed:
            raise ParamsError(f"parameter 'protocol.{fixed[0]}' is {proto[fixed[0]]!r}, but protocol "
                              f"'test-train' takes its sizes from the official split: set it to auto")
    return resolve_protocol(p["dataset"], proto)


def _evaluate(p):
    ev = p.get("evaluate") or {}
    if not isinstance(ev, dict):
        raise ParamsError(f"parameter 'evaluate' must be a mapping, got {ev!r}")
    for k in ev:
        if k not in EVALUATE_DEFAULTS:
            raise _unknown(k, EVALUATE_DEFAULTS, "evaluate.")
    ev = {**EVALUATE_DEFAULTS, **ev}
    _choice(ev["scheduler"], "evaluate.scheduler", ("local", "distributed"))
    if ev["address"] is not None and not isinstance(ev["address"], str):
        raise ParamsError(f"parameter 'evaluate.address' must be a scheduler address such as "
                          f"'tcp://host:8786' or null, got {ev['address']!r}")
    _int(ev["shards"], "evaluate.shards", 1)
    _int(ev["radius"], "evaluate.radius", 0)
    if ev["topk"] is not None:
        _int(ev["topk"], "evaluate.topk", 1)
    return ev


def _resolve(p) -> dict:
    if not isinstance(p, dict):
        raise ParamsError(f"params.yaml must be a mapping of parameters, got {type(p).__name__}")
    known = method_names()
    for k in p:
        if k in MOVED:
            raise ParamsError(f"parameter '{k}' is no longer a section: {MOVED[k]}")
        if k not in SHARED_KEYS and k not in known:
            raise _unknown(k, (*SHARED_KEYS, *known))
    for k in REQUIRED:
        if k not in p:
            raise ParamsError(f"parameter '{k}' is missing from params.yaml")
    out = {**OPTIONAL_DEFAULTS, **{k: p[k] for k in SHARED_KEYS if k in p}}
    _choice(out["dataset"], "dataset", DATASET_NAMES)
    if not isinstance(out["data_dir"], str) or not out["data_dir"]:
        raise ParamsError(f"parameter 'data_dir' must be a path string, got {out['data_dir']!r}")
    bits = out["bits"] = _list(out["bits"], "bits")
    for i, b in enumerate(bits):
        _int(b, f"bits[{i}]", 1)
        if b > MAX_BITS:
            raise ParamsError(f"parameter 'bits[{i}]' is {b}; at most {MAX_BITS} bits are supported")
    if len(set(bits)) != len(bits):
        raise ParamsError(f"parameter 'bits' lists a code length twice: {bits}")
    _int(out["depth"], "depth", 1)
    _int(out["width"], "width", 1)
    _int(out["seed"], "seed", 0)
    methods = out["methods"] = _list(out["methods"], "methods")
    for i, m in enumerate(methods):
        _choice(m, f"methods[{i}]", known)
    _choice(out["backend"], "backend", BACKENDS)
    _choice(out["features"], "features", FEATURE_NAMES)
    if out["features"] == "gist" and not DATASETS[out["dataset"]].images:
        raise ParamsError(f"parameter 'features' is 'gist' but dataset '{out['dataset']}' comes as "
                          f"feature vectors, not images; use features: pixels (the raw vectors)")
    out["protocol"] = _protocol(out)
    out["evaluate"] = _evaluate(out)
    for m in known:  # every method's section, listed in `methods` or not: one shape of config
        out[m] = _method_section(m, p.get(m))
    return out


def validate_params(p: dict) -> dict:
    """Check the whole params dictionary; return it (unchanged) or raise :class:`ParamsError`."""
    _resolve(p)
    return p


def resolve_params(p: dict) -> Config:
    """Validate ``p`` and return the read-only :class:`Config` with every default filled in."""
    cfg = _freeze(_resolve(thaw(p)))
    cfg.source_params = _freeze(thaw(p))
    return cfg


def as_config(p) -> Config:
    """``p`` if it is already resolved, else :func:`resolve_params` of it."""
    return p if isinstance(p, Config) else resolve_params(p)


def load_params(path="params.yaml") -> Config:
    """Read, validate and resolve a params file."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} does not exist; run from the project root or pass --params")
    try:
        p = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    return resolve_params(p)
