"""Stage ``download``: the raw dataset -> ``data/raw.npz`` (images, labels, info)."""
from __future__ import annotations

import json

import numpy as np

from ..data.datasets import check_raw, load_dataset
from ..io import save_npz
from .common import say
from .layout import Layout
from .params import as_config

__all__ = ["run"]


def run(params, layout=Layout()):
    params = as_config(params)
    rd = load_dataset(params["dataset"], params["data_dir"], progress=True)
    check_raw(rd.images, rd.labels, rd.info, f"{params['dataset']} in {params['data_dir']}")
    if rd.info.get("subset") == "test-only":
        say(f"{params['dataset']}: only the 10,000-image test set is available in "
            f"{params['data_dir']}: running on it alone (metrics record subset=test-only)")
    save_npz(layout.raw, images=rd.images, labels=rd.labels, info=np.str_(json.dumps(rd.info)))
    say(f"download: {rd.info['n']} items of {params['dataset']} -> {layout.raw}")
