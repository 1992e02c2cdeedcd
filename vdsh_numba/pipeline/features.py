"""Stage ``features``: the protocol's split and the standardized features -> ``data/features.npz``."""
from __future__ import annotations

import json

import numpy as np

from ..data.datasets import check_raw
from ..data.features import build_features, check_split, protocol_indices
from ..io import save_npz
from .common import load_output, say
from .layout import Layout
from .params import as_config

__all__ = ["run"]


def run(params, layout=Layout()):
    params = as_config(params)
    raw = load_output(layout.raw, "download")
    info = json.loads(str(raw["info"]))
    check_raw(raw["images"], raw["labels"], info, str(layout.raw))
    proto, kind = params["protocol"], params["features"]
    idx = protocol_indices(raw["labels"], proto, info, params["seed"])
    F = build_features(raw["images"], raw["labels"], info["max_value"], proto["queries_per_class"],
                       proto["train_per_class"], params["seed"], features=kind, indices=idx,
                       progress=True, standardize=proto.get("standardize", "global"))
    check_split(F["y_query"], F["y_db"], F["y_train"], f"the {proto.get('name', 'standard')} split")
    info = {**info, "protocol": proto, "features": kind, "n_query": int(F["y_query"].shape[0]),
            "n_db": int(F["y_db"].shape[0]), "n_train": int(F["y_train"].shape[0])}
    save_npz(layout.features, info=np.str_(json.dumps(info)), **F)
    say(f"features: {info['n_query']} queries, {info['n_db']} database, {info['n_train']} training "
        f"({F['X_train'].shape[1]} features) -> {layout.features}")
