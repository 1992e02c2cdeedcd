"""Stage ``train``: fit one method at one code length -> ``models/<method>_<bits>.npz`` and its
training curve ``reports/train/<method>_<bits>.csv``."""
from __future__ import annotations

import csv
import io

from ..methods.base import make_method
from ..io import write_text
from ..memory import check_training_memory
from .common import check_features_file, load_output, say
from .layout import Layout
from .params import as_config

__all__ = ["run"]


def run(params, method, bits, layout=Layout()):
    params = as_config(params)
    from threadpoolctl import threadpool_limits
    F = load_output(layout.features, "features", ("X_train", "y_train", "y_query", "y_db"))
    check_features_file(F, layout.features)
    model = make_method(method, bits, params)
    (n, d), y = F["X_train"].shape, F["y_train"]
    check_training_memory(model, n, d, y.shape[1] if y.ndim == 2 else int(y.max(initial=0)) + 1)
    ck = layout.checkpoint(method, bits) if model.checkpointing else None
    with threadpool_limits(limits=model.blas_threads(n)):
        if ck is None:
            model.fit(F["X_train"], F["y_train"])
        else:  # resumes from the checkpoint a killed run left behind
            ck.parent.mkdir(parents=True, exist_ok=True)
            model.fit(F["X_train"], F["y_train"], checkpoint_path=ck)
    model.save(layout.model(method, bits))
    if ck is not None:
        ck.unlink(missing_ok=True)
    hist = getattr(model, "history_", [])
    cols = [k for k in (hist[0] if hist else {}) if not isinstance(hist[0][k], (list, dict))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or ["iteration"], extrasaction="ignore")
    w.writeheader()
    for row in hist:
        w.writerow(row)
    write_text(layout.curve(method, bits), buf.getvalue())
    say(f"train: {method} {bits} bits in {model.train_seconds_:.1f} s -> {layout.model(method, bits)}")
