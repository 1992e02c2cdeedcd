"""Stage ``evaluate``: the Hamming ranking of the database for every query and its metrics ->
``reports/eval/<method>_<bits>.json`` and the PR curve ``reports/eval/pr_<method>_<bits>.csv``.

Both schedulers compute the metrics with :class:`vdsh_numba.search.metrics.Evaluation`, so the JSON has
the same keys (``scheduler``/``shards`` are added for a distributed run). Evaluation runs on the
CPU whatever ``backend`` says (``backend`` is the training/encoding backend, recorded as such)."""
from __future__ import annotations

import csv
import io
import json

from ..io import write_json, write_text
from ..search.metrics import evaluate_codes
from .common import dask_client, load_output, row_shards, say
from .layout import Layout
from .params import as_config

__all__ = ["run"]


def run(params, method, bits, layout=Layout()):
    params = as_config(params)
    F = load_output(layout.features, "features")
    C = load_output(layout.codes(method, bits), "encode")
    radius, topk = params["evaluate"]["radius"], params["evaluate"]["topk"]
    dask = dask_client(params)
    if dask is None:
        scalars, pr = evaluate_codes(C["query"], C["db"], F["y_query"], F["y_db"], int(bits),
                                     radius=radius, topk=topk)
    else:  # the same metrics (same keys), the passes run on the shards: rankings merged exactly
        from ..search.distributed import ShardedHammingIndex
        client, close, shards = dask
        try:
            index = ShardedHammingIndex(int(bits), client)
            for s, e in row_shards(C["db"].shape[0], shards):
                index.add(C["db"][s:e], labels=F["y_db"][s:e])
            scalars, pr = index.evaluate(C["query"], F["y_query"], radius=radius, topk=topk)
            scalars["scheduler"] = "distributed"
            scalars["shards"] = index.nshards
        finally:
            close()
    info = json.loads(str(F["info"]))
    out = {**{k: (v if isinstance(v, str) else float(v)) for k, v in scalars.items()},
           "train_seconds": float(C["train_seconds"]), "backend": str(C["backend"]),
           "dataset": info["dataset"], "subset": info.get("subset", "full"),
           "n_query": info["n_query"], "n_db": info["n_db"], "n_train": info["n_train"]}
    write_json(layout.eval(method, bits), out)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["radius", "precision", "recall"], extrasaction="ignore")
    w.writeheader()
    for row in pr:
        w.writerow(row)
    write_text(layout.pr(method, bits), buf.getvalue())
    say(f"evaluate: {method} {bits} bits mAP {out['map']:.4f} -> {layout.eval(method, bits)}")
