import copy

import pytest
import yaml

from tests.conftest import ROOT
from vdsh_numba.params import ParamsError, validate_params

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
    p["train"]["sweps"] = 3
    with pytest.raises(ParamsError, match="unknown parameter 'train.sweps'; did you mean 'sweeps'"):
        validate_params(p)


@pytest.mark.parametrize("kw, msg", [
    ({"depth": 0}, "'depth' must be >= 1, got 0"),
    ({"width": "wide"}, "'width' must be an integer, got 'wide'"),
    ({"bits": [12, 0]}, r"'bits\[1\]' must be >= 1"),
    ({"bits": 12}, "'bits' must be a non-empty list"),
    ({"dataset": "imagenet"}, "'dataset' is 'imagenet'; expected one of"),
    ({"methods": ["vdsh", "nope"]}, r"'methods\[1\]' is 'nope'"),
    ({"backend": "tpu"}, "'backend' is 'tpu'"),
    ({"depth": True}, "'depth' must be an integer"),
])
def test_bad_values(kw, msg):
    with pytest.raises(ParamsError, match=msg):
        validate_params(_with(**kw))
