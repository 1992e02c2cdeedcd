"""``vdsh compare``: every method x code length on one dataset, in one table.

The comparison is a one-seed study (:mod:`vdsh_numba.studies`): the pipeline's own stages
(:mod:`vdsh_numba.pipeline`: download, features, train, encode, evaluate) for each method and
code length, so every method sees the features, split and evaluator that ``dvc repro`` uses. The
stages write their usual files under a private root (default ``.compare/<dataset>``,
git-ignored), never into the DVC-tracked ``data/``, ``models/``, ``codes/`` or ``reports/``. Only the final table is written to the output
directory, atomically, once every fit has finished:

* ``comparison_<dataset>.csv`` - one row per method x code length;
* ``comparison_<dataset>.md`` - the same table with the quality floors (MNIST) and whether
  each is met;
* ``comparison_<dataset>.png`` - mAP against code length, one line per method.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .io import atomic_path, write_text
from .pipeline.params import Config, ParamsError, resolve_params, thaw

__all__ = ["FLOORS", "FLOOR_TOLERANCE", "resolve_methods", "run_comparison", "floor_check",
           "COLUMNS"]

#: mAP floors (whole ranking, ties by index) of issue 6, measured by an independent
#: implementation on the MNIST test set, 100 queries / 500 training images per class, seed 0
FLOORS = {"mnist": {"lsh": {12: 0.20, 24: 0.24, 32: 0.27, 48: 0.32},
                    "itq": {12: 0.41, 24: 0.45, 32: 0.46, 48: 0.45},
                    "sdh": {12: 0.87, 24: 0.90, 32: 0.92, 48: 0.93}}}
#: a floor is met when mAP >= floor - FLOOR_TOLERANCE
FLOOR_TOLERANCE = 0.02
#: the split the floors were measured on (anything else: the floors are not applicable)
FLOOR_SPLIT = {"mnist": {"n_query": 1000, "n_db": 9000, "n_train": 5000}}

#: CSV columns, in order (the markdown table uses the same, plus the floor columns)
COLUMNS = ("method", "bits", "map", "map_tie_aware", "precision_hamming2",
           "precision_hamming2_empty_fraction", "train_seconds")
_HEAD = {"method": "method", "bits": "bits", "map": "mAP", "map_tie_aware": "mAP (tie-aware)",
         "precision_hamming2": "P@H≤2", "precision_hamming2_empty_fraction": "P@H≤2 empty",
         "train_seconds": "train s"}
#: the order of ``--methods all``: ours first, then the baselines as registered
_ORDER = ("vdsh", "lsh", "itq", "sdh", "dpsh", "dtsh", "dcwh", "tie_ap", "classifier", "vdsh_backprop",
          "vdsh_backprop_residual")


def _registered():
    from .methods import METHODS
    return [m for m in _ORDER if m in METHODS] + sorted(set(METHODS) - set(_ORDER))


def resolve_methods(spec) -> list:
    """``"all"``, a comma-separated string or a list of names -> the list of methods.

    Raises :class:`ParamsError` naming an unknown method and the known ones.
    """
    known = _registered()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return known
    if not names:
        raise ParamsError(f"no method given; expected 'all' or a comma-separated list of {known}")
    for n in names:
        if n not in known:
            import difflib
            close = difflib.get_close_matches(n, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamsError(f"unknown method {n!r}{hint} (expected 'all' or some of {known})")
    if len(set(names)) != len(names):
        raise ParamsError(f"a method is listed twice: {names}")
    return names


def floor_check(dataset, method, bits, value, split):
    """``(floor, gap, met)`` for one result; ``(None, None, None)`` where no floor applies
    (another dataset, method or code length, or a split other than the floors')."""
    fl = FLOORS.get(dataset, {}).get(method, {}).get(int(bits))
    want = FLOOR_SPLIT.get(dataset)
    if fl is None or (want and any(split.get(k) != v for k, v in want.items())):
        return None, None, None
    gap = float(value) - fl
    return fl, gap, bool(gap >= -FLOOR_TOLERANCE)


def run_comparison(params, methods="all", bits=None, *, dataset=None, data_dir=None,
                   out_dir="reports", work_dir=None, resume=False, command=None, say=None):
    """Train, encode and evaluate every method x code length; write the comparison files.

    The runs are those of a study (:func:`vdsh_numba.studies.run_study`: the pipeline's own
    stages under the work dir's layout) with params ``seed``; the table is written once every
    run has finished.

    Parameters
    ----------
    params : dict
        The params.yaml dictionary (validated here again after the overrides).
    methods : "all", comma-separated str, or list of str
    bits : list of int, optional
        Code lengths (default: params ``bits``).
    dataset, data_dir : str, optional
        Override params ``dataset`` / ``data_dir`` (``data_dir`` is taken relative to the
        current directory).
    out_dir : path
        Where ``comparison_<dataset>.{md,csv,png}`` go.
    work_dir : path, optional
        The stages' scratch directory (default ``.compare/<dataset>``).
    resume : bool
        Reuse a method x code length already evaluated in ``work_dir`` with the same params.

    Returns
    -------
    rows : list of dict
        One per method x code length, with the :data:`COLUMNS` and ``floor``/``floor_gap``/
        ``floor_met`` (``None`` where no floor applies).
    """
    from .pipeline import say as pipeline_say
    from .studies import run_study
    say = say or pipeline_say
    p = params.source if isinstance(params, Config) else thaw(params)  # the params as written
    if dataset is not None:
        p["dataset"] = dataset
    if data_dir is not None:
        p["data_dir"] = data_dir
    p["data_dir"] = str(Path(p["data_dir"]).resolve())
    p["methods"] = resolve_methods(methods)
    p["bits"] = [int(b) for b in (bits if bits is not None else p["bits"])]
    cfg = resolve_params(p)  # every refusal before any work or output
    ds = p["dataset"]
    out_dir = Path(out_dir).resolve()
    work = Path(work_dir if work_dir is not None else Path(".compare") / ds).resolve()
    spec = {"name": f"comparison_{ds}", "base": {}, "methods": p["methods"], "bits": p["bits"],
            "seeds": [p["seed"]], "grid": {}, "settings": [{}]}
    record = work / "runs"
    if not resume:  # start clean: no result of an earlier run can be picked up
        shutil.rmtree(work, ignore_errors=True)
    done = run_study(spec, p, out_dir=record, work_root=work, say=say)
    rows = []
    for m in p["methods"]:
        for b in p["bits"]:
            r = next(r for r in reversed(done) if r["method"] == m and int(r["bits"]) == b
                     and int(r["seed"]) == p["seed"])
            split = {k: int(r[k]) for k in ("n_query", "n_db", "n_train")}
            row = {"method": m, "bits": b, **{k: float(r[k]) for k in COLUMNS[2:]}}
            row["floor"], row["floor_gap"], row["floor_met"] = floor_check(ds, m, b, row["map"], split)
            rows.append(row)
            say(f"compare: {m} {b} bits mAP {row['map']:.4f} tie-aware {row['map_tie_aware']:.4f} "
                f"P@H<=2 {row['precision_hamming2']:.4f} train {row['train_seconds']:.1f} s")
    meta = {"dataset": ds, "subset": r["subset"] or "full", **split, "depth": p["depth"],
            "width": p["width"], "seed": p["seed"], "features": cfg["features"],
            "standardize": cfg["protocol"]["standardize"],
            "backend": p["backend"]}
    _write(rows, meta, out_dir, p, command)
    return rows


def _write(rows, meta, out_dir, p, command):
    import pandas as pd
    ds = meta["dataset"]
    df = pd.DataFrame([{k: r[k] for k in COLUMNS} | {"floor": r["floor"], "floor_met": r["floor_met"]}
                       for r in rows])
    with atomic_path(out_dir / f"comparison_{ds}.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_text(out_dir / f"comparison_{ds}.md", _markdown(rows, meta, command))
    _plot(rows, meta, p, out_dir / f"comparison_{ds}.png")


def _markdown(rows, meta, command):
    ds = meta["dataset"] + ("" if meta["subset"] == "full" else f" ({meta['subset']})")
    lines = [f"# Method comparison: {ds}", "",
             f"{meta['n_query']} queries / {meta['n_db']} database / {meta['n_train']} training "
             f"items (docs/protocols.md), features {meta['features']} (standardize "
             f"{meta['standardize']}), depth {meta['depth']} x width {meta['width']}, seed "
             f"{meta['seed']}, backend {meta['backend']}. One fit per cell. mAP over the whole "
             f"Hamming ranking, ties broken by database index; tie-aware mAP after He et al.; "
             f"P@H≤2 = precision of the items within Hamming radius 2 (a query with none "
             f"counts 0; 'empty' = fraction of such queries); train s = wall-clock fit time.",
             ""]
    if command:
        lines += [f"Regenerate: `{command}`", ""]
    has_floor = any(r["floor"] is not None for r in rows)
    cols = [_HEAD[c] for c in COLUMNS] + (["floor", "floor met? (mAP - floor)"] if has_floor else [])
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["method"], str(r["bits"])] + [f"{r[c]:.4f}" for c in COLUMNS[2:6]] + \
            [f"{r['train_seconds']:.1f}"]
        if has_floor:
            cells += ["", ""] if r["floor"] is None else [f"{r['floor']:.2f}", _verdict(r)]
        lines.append("| " + " | ".join(cells) + " |")
    floors = FLOORS.get(meta["dataset"])
    if floors:
        lines.append("")
        if not has_floor:
            lines.append(f"Quality floors are defined for {meta['dataset']} on "
                         f"{FLOOR_SPLIT[meta['dataset']]} only: not applicable to this split.")
        else:
            checked = [r for r in rows if r["floor"] is not None]
            missed = [f"{r['method']} {r['bits']}" for r in checked if not r["floor_met"]]
            lines.append(f"Quality floors (issue 6; mAP, met when within {FLOOR_TOLERANCE} of the "
                         f"floor or above): {len(checked) - len(missed)} of {len(checked)} met"
                         + (f"; missed: {', '.join(missed)}." if missed else "."))
    return "\n".join(lines) + "\n"


def _verdict(r):
    if r["floor_gap"] >= 0:
        return f"above ({r['floor_gap']:+.3f})"
    if r["floor_met"]:
        return f"within {FLOOR_TOLERANCE} ({r['floor_gap']:+.3f})"
    return f"**missed** ({r['floor_gap']:+.3f})"


def _plot(rows, meta, p, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in p["methods"]:
        pts = sorted((r["bits"], r["map"]) for r in rows if r["method"] == m)
        line, = ax.plot([b for b, _ in pts], [v for _, v in pts], "o-", label=m)
        fl = sorted((r["bits"], r["floor"]) for r in rows if r["method"] == m and r["floor"] is not None)
        if fl:  # the quality floor, dashed in the method's colour
            ax.plot([b for b, _ in fl], [v for _, v in fl], "x--", color=line.get_color(), alpha=0.6,
                    label=f"{m} floor")
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel("mAP")
    ax.set_xticks(sorted(set(p["bits"])))
    ax.set_title(f"{meta['dataset']}: mAP vs code length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
