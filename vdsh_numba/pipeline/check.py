"""``vdsh check``'s data checks (no stage): what is already there, validated; writes nothing."""
from __future__ import annotations

import json

from ..data.datasets import DATASETS, DataError, check_raw, load_dataset
from ..data.features import protocol_indices
from .common import check_features_file, load_output
from .layout import Layout
from .params import as_config

__all__ = ["check_data"]


def check_data(params, layout=Layout()):
    """The data checks of ``vdsh check``, on whatever data is already there; writes nothing.

    Raw data (``data/raw.npz``, or the embedded digits set when it is not there yet): one
    label per image, finite values, labels inside the declared classes, and the protocol's
    per-class counts fit every class. Features (``data/features.npz`` when present): finite
    values, valid labels, every class among queries and database has a training example.

    Returns
    -------
    problems : list of str
        What is wrong (empty when everything checked is fine).
    checked : list of str
        What was checked, or skipped and why.
    """
    params = as_config(params)
    problems, checked = [], []
    raw, RAW, FEATURES = None, layout.raw, layout.features
    if RAW.exists():
        raw = load_output(RAW, "download")
        info, where = json.loads(str(raw["info"])), str(RAW)
        if info.get("dataset") != params["dataset"]:
            checked.append(f"{RAW} holds {info.get('dataset')!r}, params say {params['dataset']!r}: "
                           f"not checked (the download stage will replace it)")
            raw = None
    elif DATASETS[params["dataset"]].bundled:
        rd = load_dataset(params["dataset"], None, progress=False)
        raw, info, where = ({"images": rd.images, "labels": rd.labels}, rd.info,
                            f"{params['dataset']} (embedded)")
    else:
        checked.append(f"{RAW} not found: raw data not checked (run the download stage first)")
    if raw is not None:
        try:
            check_raw(raw["images"], raw["labels"], info, where)
            proto = params["protocol"]
            q, db, tr = protocol_indices(raw["labels"], proto, info, params["seed"])
            checked.append(f"{where}: {len(raw['labels'])} items; protocol "
                           f"{proto.get('name', 'standard')} gives {len(q)} queries, {len(db)} "
                           f"database, {len(tr)} training")
        except (DataError, ValueError) as e:
            problems.append(str(e) if str(e).startswith(where) else f"{where}: {e}")
    if FEATURES.exists():
        try:
            check_features_file(load_output(FEATURES, "features"), FEATURES)
            checked.append(f"{FEATURES}: finite features, valid labels, every class trained on")
        except (TypeError, ValueError) as e:
            problems.append(str(e))
    return problems, checked
