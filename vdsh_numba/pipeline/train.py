"""Stage ``train``: fit one method at one code length -> ``models/<method>_<bits>.npz`` and its
training curve ``reports/train/<method>_<bits>.csv``."""
from __future__ import annotations

import csv
import io

from ..base import make_method
from ..io import write_text
from ..memory import check_training_memory
from .common import check_features_file, load_output, say
from .layout import Layout

__all__ = ["run", "blas_threads"]


def run(params, method, bits, layout=Layout()):
    from threadpoolctl import threadpool_limits
    F = load_output(layout.features, "features", ("X_train", "y_train", "y_query", "y_db"))
    check_features_file(F, layout.features)
    model = make_method(method, bits, params)
    (n, d), y = F["X_train"].shape, F["y_train"]
    check_training_memory(method, n, d, params["depth"], params["width"], bits,
                          y.shape[1] if y.ndim == 2 else int(y.max(initial=0)) + 1,
                          first_width=(params.get("train") or {}).get("first_width"))
    ck = layout.checkpoint(method, bits) if (params.get("train") or {}).get("checkpoint_every", 0) \
        and method == "vdsh" else None
    with threadpool_limits(limits=blas_threads(method, n, params["width"])):
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


def blas_threads(method, n, width):
    """BLAS threads for training: 1 where every product is small (the minibatch methods, and
    VDSH with ``n * width**2`` below ``config.BLAS_SMALL_PRODUCT``), else the library default.

    Waking BLAS threads for small products costs more than it saves: VDSH on digits
    (1,000 x 256) ran 0.20 s per sweep with one OpenBLAS thread against 0.69 s with two.
    """
    from .. import config
    if method == "vdsh" and n * width * width >= config.BLAS_SMALL_PRODUCT:
        return None
    return 1
