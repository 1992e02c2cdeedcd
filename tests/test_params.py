import copy

import pytest
import yaml

from tests.conftest import ROOT
from vdsh_numba.pipeline.params import ParamsError, as_config, resolve_params, thaw, validate_params

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def _with(**kw):
    p = copy.deepcopy(BASE)
    p.update(kw)
    return p


def test_repo_params_are_valid():
    validate_params(copy.deepcopy(BASE))


def test_typo_suggests():
    p = copy.deepcopy(BASE)
    p["depht"] = p.pop("depth")
    with pytest.raises(ParamsError, match="unknown parameter 'depht'; did you mean 'depth'"):
        validate_params(p)
    p = copy.deepcopy(BASE)
    p["vdsh"]["sweps"] = 3
    with pytest.raises(ParamsError, match="unknown parameter 'vdsh.sweps'; did you mean 'sweeps'"):
        validate_params(p)
    p = copy.deepcopy(BASE)
    p["dtsh"]["etaa"] = 0.1
    with pytest.raises(ParamsError, match="unknown parameter 'dtsh.etaa'; did you mean 'eta'"):
        validate_params(p)


@pytest.mark.parametrize("old, where", [("train", "'vdsh:'"), ("baselines", "top-level section")])
def test_sections_of_earlier_versions_say_where_their_keys_went(old, where):
    with pytest.raises(ParamsError, match=f"'{old}' is no longer a section.*{where}"):
        validate_params(_with(**{old: {}}))


def test_resolved_config_fills_every_default_once():
    """Every default comes from its owner, filled in at the boundary: the dataset's protocol
    sizes, the evaluate defaults, every registered method's section (from its own signature or
    TRAIN_DEFAULTS), and the keys params.yaml leaves out."""
    import inspect
    from vdsh_numba.methods import METHODS
    from vdsh_numba.methods.vdsh import TRAIN_DEFAULTS
    from vdsh_numba.data.datasets import DATASETS
    p = copy.deepcopy(BASE)
    for k in ("features", "protocol", "evaluate", "dtsh", "lsh"):
        p.pop(k, None)
    p["vdsh"] = {"sweeps": 7}
    cfg = resolve_params(p)
    assert cfg["features"] == "pixels"
    proto = DATASETS[p["dataset"]].protocol
    assert cfg["protocol"]["queries_per_class"] == proto["queries_per_class"]
    assert cfg["protocol"]["train_per_class"] == proto["train_per_class"]
    assert cfg["protocol"]["name"] == "standard" and cfg["protocol"]["validation"] is False
    assert cfg["evaluate"]["radius"] == 2 and cfg["evaluate"]["topk"] is None
    assert cfg["vdsh"] == {**TRAIN_DEFAULTS, "sweeps": 7}
    sig = inspect.signature(METHODS["dtsh"].__init__).parameters
    assert cfg["dtsh"] == {k: v.default for k, v in sig.items()
                           if k not in ("self", "bits", "depth", "width", "seed")}
    assert set(METHODS) <= set(cfg)
    assert cfg.source["vdsh"] == {"sweeps": 7} and "evaluate" not in cfg.source  # as written


def test_resolved_config_is_read_only_and_serialisable():
    import json
    import pickle
    cfg = resolve_params(copy.deepcopy(BASE))
    for change in (lambda: cfg.__setitem__("depth", 3), lambda: cfg["vdsh"].update(sweeps=1),
                   lambda: cfg.pop("seed"), lambda: cfg["bits"].append(64)):
        with pytest.raises((TypeError, AttributeError)):
            change()
    assert json.loads(json.dumps(cfg))["bits"] == BASE["bits"]
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert as_config(cfg) is cfg and as_config(copy.deepcopy(BASE)) == cfg
    assert thaw(cfg) == json.loads(json.dumps(cfg)) and type(thaw(cfg)["vdsh"]) is dict


@pytest.mark.parametrize("kw, msg", [
    ({"depth": 0}, "'depth' must be >= 1, got 0"),
    ({"width": "wide"}, "'width' must be an integer, got 'wide'"),
    ({"bits": [12, 0]}, r"'bits\[1\]' must be >= 1"),
    ({"bits": 12}, "'bits' must be a non-empty list"),
    ({"dataset": "imagenet"}, "'dataset' is 'imagenet'; expected one of"),
    ({"methods": ["vdsh", "nope"]}, r"'methods\[1\]' is 'nope'"),
    ({"backend": "tpu"}, "'backend' is 'tpu'"),
    ({"depth": True}, "'depth' must be an integer"),
    ({"vdsh": {"sweeps": 2.5}}, "'vdsh.sweeps' must be an integer, got 2.5"),
    ({"vdsh": {"residual": "yes"}}, "'vdsh.residual' must be true or false"),
    ({"dtsh": {"lr": "fast"}}, "'dtsh.lr' must be a number, got 'fast'"),
    ({"evaluate": {"shards": 0}}, "'evaluate.shards' must be >= 1"),
    ({"protocol": {"name": "test-train"}}, "'protocol.name' is 'test-train'"),
])
def test_bad_values(kw, msg):
    with pytest.raises(ParamsError, match=msg):
        validate_params(_with(**kw))
