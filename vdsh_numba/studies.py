"""``vdsh study``: many runs of the pipeline's own stages, one CSV row per run, resumable.

A study is a YAML file (``studies/<name>.yaml``) that names a grid of runs::

    name: tune_vdsh_fashion_mnist
    description: VDSH's train settings on the validation split
    base: {dataset: fashion_mnist, protocol.validation: true}   # params.yaml overrides, dotted keys
    methods: [vdsh]
    bits: [12, 32]
    seeds: [0]
    grid:                       # the product of these lists (dotted keys, like ``dvc exp run -S``)
      vdsh.rho: [0.01, 0.1]
    settings:                   # or an explicit list of override dicts (both: the product of the two)
      - {depth: 2}

Every run is ``params.yaml`` + ``base`` + one setting + ``seed`` (split and initialisation), for
each method and code length; it runs the stages ``download``, ``features`` (once per distinct
data/split/feature params), ``train``, ``encode`` and ``evaluate`` of :mod:`vdsh_numba.pipeline` under
its own root (``.studies/<name>/``, git-ignored), so it uses exactly the split code and the
evaluator of ``dvc repro``. Each finished run appends one row to ``reports/studies/<name>.csv``
(method, dataset, features, protocol, split, depth, width, bits, seed, the setting, the metrics,
fit seconds, the commit and a fingerprint of its params); a run whose fingerprint is already there
is skipped, so an interrupted study resumes from its finished runs. ``summarise`` writes
``reports/studies/<name>.md``: mean +- standard deviation over seeds of every configuration.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .io import atomic_path, write_text
from .pipeline.params import Config, ParamsError, as_config, resolve_params, thaw

__all__ = ["load_study", "expand_runs", "pending_runs", "run_dir", "retrieval_figure", "apply_overrides", "run_study", "read_rows", "summarise",
           "ROW_KEYS", "METRIC_KEYS", "best_setting"]

#: the metrics copied from reports/eval/<method>_<bits>.json into a row
METRIC_KEYS = ("map", "map_tie_aware", "precision_hamming2", "precision_hamming2_empty_fraction",
               "train_seconds")
#: the leading columns of every row, in order (then ``setting``, the metrics and the stamps)
ROW_KEYS = ("study", "method", "dataset", "features", "protocol", "split", "depth", "width",
            "first_width", "bits", "seed")
STAMP_KEYS = ("setting", *METRIC_KEYS, "n_query", "n_db", "n_train", "subset", "commit",
              "fingerprint", "finished")


def load_study(path) -> dict:
    import yaml
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"study file {path} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}
    allowed = {"name", "description", "base", "methods", "bits", "seeds", "grid", "settings"}
    for k in spec:
        if k not in allowed:
            raise ParamsError(f"{path}: unknown key {k!r}; expected some of {sorted(allowed)}")
    for k in ("name", "methods", "bits"):
        if k not in spec:
            raise ParamsError(f"{path}: key {k!r} is missing")
    spec.setdefault("seeds", [0])
    spec.setdefault("base", {})
    spec.setdefault("grid", {})
    spec.setdefault("settings", [{}])
    return spec


def apply_overrides(params: dict, overrides: dict) -> dict:
    """A deep copy of the params as written (``params.source`` of a resolved config) with
    dotted keys set (``vdsh.rho: 0.1``, ``dtsh.lr: 0.003``), checked by resolving it.

    Like ``dvc exp run -S``: a method's section or ``protocol`` is created when params.yaml
    leaves it out; any other missing section is an error."""
    from .methods import METHODS
    p = params.source if isinstance(params, Config) else thaw(params)
    for key, value in overrides.items():
        parts = key.split(".")
        node = p
        for i, part in enumerate(parts[:-1]):
            if part not in node or node[part] is None:
                if i == 0 and (part in METHODS or part == "protocol"):
                    node[part] = {}
                else:
                    raise ParamsError(f"override {key!r}: params.yaml has no section "
                                      f"{'.'.join(parts[:i + 1])!r}")
            node = node[part]
        node[parts[-1]] = value
    resolve_params(p)  # every refusal before any work
    return p


def expand_runs(spec: dict, params: dict) -> list:
    """Every run of a study: dicts with ``method``, ``bits``, ``seed``, ``setting`` and the
    resolved ``params``; validated before any work (a bad override stops the study at once)."""
    grid = spec["grid"] or {}
    keys = sorted(grid)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*[grid[k] for k in keys])] or [{}]
    runs = []
    for extra in spec["settings"] or [{}]:
        for combo in combos:
            setting = {**extra, **combo}
            for seed in spec["seeds"]:
                for method in spec["methods"]:
                    p = apply_overrides(params, {**spec["base"], **setting, "seed": seed,
                                                 "methods": [method]})
                    for bits in spec["bits"]:
                        q = {**p, "bits": [int(bits)]}
                        runs.append({"method": method, "bits": int(bits), "seed": seed,
                                     "setting": setting, "params": q})
    return runs


def pending_runs(spec: dict, params: dict, csv_path):
    """``(all runs, runs whose fingerprint is not yet in csv_path)``; each run carries its
    ``fingerprint``."""
    runs = expand_runs(spec, params)
    for r in runs:
        r["fingerprint"] = _fingerprint(r["params"], r["method"])
    done, legacy = set(), set()
    for row in read_rows(csv_path):
        if row["fingerprint"].startswith(FINGERPRINT_PREFIX):
            done.add(row["fingerprint"])
        else:  # a row of the earlier scheme (params as written): matched by its run key
            legacy.add(_run_key(row["method"], row["bits"], row["seed"], json.loads(row["setting"] or "{}")))
    todo, seen = [], set(done)
    for r in runs:  # a setting another method's knob only changes is the same run: once
        if r["fingerprint"] in seen or _run_key(r["method"], r["bits"], r["seed"], r["setting"]) in legacy:
            continue
        seen.add(r["fingerprint"])
        todo.append(r)
    return runs, todo


def _run_key(method, bits, seed, setting):
    """``(method, bits, seed, the setting's keys this method reads)``: how a row recorded before
    fingerprints covered the resolved params (no ``r-`` prefix) is recognised. Keys of other
    methods' sections are dropped; the sections' earlier names (``train.``, ``baselines.<m>.``)
    read as today's (``vdsh.``, ``<m>.``)."""
    from .methods import METHODS
    own = {}
    for k, v in setting.items():
        k = "vdsh." + k[len("train."):] if k.startswith("train.") else k
        k = k[len("baselines."):] if k.startswith("baselines.") else k
        head = k.split(".")[0]
        if head in METHODS and head != method:
            continue
        own[k] = v
    return method, int(bits), int(seed), json.dumps(own, sort_keys=True)


#: marks fingerprints of the resolved params (rows without it hashed the params as written)
FINGERPRINT_PREFIX = "r-"


def _fingerprint(p, method):
    """What a run's result depends on: the resolved params (every default filled in) less the
    other methods' sections, so a knob of one method never reruns another, and a changed
    default reruns what it changes."""
    from . import __version__
    from .methods import METHODS
    cfg = as_config(p)
    keep = {k: v for k, v in cfg.items() if k not in METHODS and k != "methods"}
    # where the data lies relative to the checkout (studies run from its root), not the absolute
    # path: a clone elsewhere must recognise the committed rows
    keep["data_dir"] = os.path.relpath(str(cfg["data_dir"]))
    keep["own"] = cfg[method]
    blob = json.dumps({"params": keep, "method": method, "version": __version__}, sort_keys=True,
                      default=str)
    return FINGERPRINT_PREFIX + hashlib.sha256(blob.encode()).hexdigest()[:16]


def _data_key(p):
    cfg = as_config(p)
    keep = {k: cfg[k] for k in ("dataset", "data_dir", "seed", "protocol", "features")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:12]


def run_dir(work_root, name, fingerprint) -> Path:
    """Where a finished run keeps its codes (``codes.npz``), PR curve (``pr.csv``) and the
    folder of its data (``data_dir.txt``: ``data/raw.npz``, ``data/features.npz``)."""
    return Path(work_root) / name / "runs" / fingerprint


def _commit():
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def read_rows(csv_path) -> list:
    csv_path = Path(csv_path)
    if not csv_path.exists():
        return []
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on ``path`` (created): several ``vdsh study run`` processes may work on
    one study (e.g. one per core, split by method) without losing each other's rows."""
    import fcntl
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _append(csv_path, row):
    with _locked(Path(csv_path).with_suffix(".lock")):
        _append_unlocked(csv_path, row)


def _append_unlocked(csv_path, row):
    rows = [{k: r.get(k, "") for k in (*ROW_KEYS, *STAMP_KEYS)}  # rows of older versions: blanks
            for r in read_rows(csv_path)] + [{k: row[k] for k in (*ROW_KEYS, *STAMP_KEYS)}]
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*ROW_KEYS, *STAMP_KEYS])
        w.writeheader()
        w.writerows(rows)


def run_study(spec: dict, params: dict, *, out_dir="reports/studies", work_root=".studies",
              say=None) -> list:
    """Run every run of ``spec`` not yet in ``<out_dir>/<name>.csv``; return all its rows."""
    from . import pipeline
    from .io import read_json
    say = say or pipeline.say
    name = spec["name"]
    out_dir, work_root = Path(out_dir).resolve(), Path(work_root).resolve()
    params = params.source if isinstance(params, Config) else thaw(params)
    params["data_dir"] = str(Path(params["data_dir"]).resolve())
    csv_path = out_dir / f"{name}.csv"
    runs, todo = pending_runs(spec, params, csv_path)
    commit = _commit()
    say(f"study {name}: {len(runs)} runs, {len(todo)} to run (the rest are in {csv_path} or repeat one)")
    for i, run in enumerate(todo):
        m, b, fp = run["method"], run["bits"], run["fingerprint"]
        p = resolve_params(run["params"])
        work = work_root / name / _data_key(p)
        lay = pipeline.Layout(work)
        with _locked(work.parent / f".{work.name}.lock"):
            if not (work / "features.done").exists():
                pipeline.download.run(p, lay)
                pipeline.features.run(p, lay)
                write_text(work / "features.done", "ok\n")
        pipeline.train.run(p, m, b, lay)
        pipeline.encode.run(p, m, b, lay)
        pipeline.evaluate.run(p, m, b, lay)
        r = read_json(lay.eval(m, b))
        keep = run_dir(work_root, name, fp)  # the run's codes and PR curve, for figures
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lay.codes(m, b), keep / "codes.npz")
        shutil.copyfile(lay.pr(m, b), keep / "pr.csv")
        write_text(keep / "data_dir.txt", str(work) + "\n")
        proto = p["protocol"]
        row = {"study": name, "method": m, "dataset": p["dataset"],
               "features": p["features"], "protocol": proto["name"],
               "split": "validation" if proto["validation"] else "test",
               "depth": p["depth"], "width": p["width"],
               "first_width": p["vdsh"]["first_width"], "bits": b,
               "seed": p["seed"], "setting": json.dumps(run["setting"], sort_keys=True),
               **{k: r[k] for k in METRIC_KEYS}, **{k: r[k] for k in ("n_query", "n_db", "n_train", "subset")},
               "commit": commit, "fingerprint": fp,
               "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        _append(csv_path, row)
        say(f"study {name} [{i + 1}/{len(todo)}]: {m} {b} bits seed {p['seed']} {run['setting']} "
            f"mAP {r['map']:.4f} ({r['train_seconds']:.0f} s)")
    rows = read_rows(csv_path)
    summarise(name, rows, out_dir, spec.get("description", ""))
    return rows


def _group(rows):
    keys = ("method", "dataset", "features", "protocol", "split", "depth", "width", "first_width",
            "bits", "setting")
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return keys, groups


def best_setting(rows, method, split="validation"):
    """The setting with the highest mean mAP over its code lengths and seeds (ties: first seen)."""
    scores = {}
    for r in rows:
        if r["method"] == method and r["split"] == split:
            scores.setdefault(r["setting"], []).append(float(r["map"]))
    if not scores:
        return None, None
    best = max(scores, key=lambda s: np.mean(scores[s]))
    return json.loads(best), float(np.mean(scores[best]))


def summarise(name, rows, out_dir, description=""):
    """``<out_dir>/<name>.md``: one line per configuration, mean +- std over its seeds."""
    keys, groups = _group(rows)
    commits = sorted({r["commit"] for r in rows})
    lines = [f"# Study: {name}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [f"{len(rows)} runs, commits {', '.join(commits)}. Regenerate: "
              f"`vdsh study run studies/{name}.yaml` (finished runs are kept: "
              f"reports/studies/{name}.csv, one row per run). mAP over the whole Hamming ranking, "
              f"ties by database index; mean ± standard deviation over seeds (n = seeds).", ""]
    head = [*keys[:-1], "setting", "n", "mAP", "tie-aware mAP", "P@H≤2", "train s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        def ms(k):
            v = np.array([float(r[k]) for r in rs])
            return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"
        t = np.mean([float(r["train_seconds"]) for r in rs])
        lines.append("| " + " | ".join([*map(str, key), str(len(rs)), ms("map"), ms("map_tie_aware"),
                                        ms("precision_hamming2"), f"{t:.0f}"]) + " |")
    write_text(Path(out_dir) / f"{name}.md", "\n".join(lines) + "\n")


def retrieval_figure(csv_path, methods, bits, seed, out_png, *, work_root=".studies", n_queries=8,
                     top=10, split="test"):
    """What a person looks at: ``n_queries`` test queries (drawn with ``seed``), each with its
    ``top`` database images by Hamming distance (ties by index) for every method, wrong-class
    results framed in red, distances under each; and beside it the precision-recall curves
    (Hamming radius sweep) of the methods. Reads the runs of ``csv_path`` (``vdsh study run``)
    whose method, bits and seed match (the first of each method, in CSV order)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .search.hamming import HammingIndex
    rows = read_rows(csv_path)
    name = Path(csv_path).stem
    picked = []
    for m in methods:
        cand = [r for r in rows if r["method"] == m and int(r["bits"]) == int(bits)
                and int(r["seed"]) == int(seed) and r["split"] == split]
        if not cand:
            raise ParamsError(f"{csv_path}: no {split} run of {m!r} at {bits} bits, seed {seed}")
        picked.append(cand[0])
    runs = [run_dir(work_root, name, r["fingerprint"]) for r in picked]
    for d in runs:
        if not (d / "codes.npz").exists():
            raise FileNotFoundError(f"{d / 'codes.npz'} is missing: rerun the study in this "
                                    f"checkout (run artefacts are not versioned)")
    from .pipeline import Layout
    data = Layout(Path((runs[0] / "data_dir.txt").read_text().strip()))
    with np.load(data.raw) as f:
        images = f["images"]
    with np.load(data.features) as f:
        qi, di, yq, yd = f["query_idx"], f["db_idx"], f["y_query"], f["y_db"]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(qi.size, n_queries, replace=False))
    fig = plt.figure(figsize=(1.1 * (1 + top) * len(methods) + 4.5, 1.25 * n_queries + 0.6))
    gs = fig.add_gridspec(n_queries, (1 + top) * len(methods) + 4)
    for k, (m, d) in enumerate(zip(methods, runs)):
        with np.load(d / "codes.npz") as f:
            q, db = f["query"], f["db"]
        index = HammingIndex(int(bits))
        index.add(db)
        D, I = index.search(q[chosen], top)
        for row, (j, dist, ids) in enumerate(zip(chosen, D, I)):
            base = k * (1 + top)
            ax = fig.add_subplot(gs[row, base])
            ax.imshow(images[qi[j]], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"{m}\nquery", fontsize=8)
            for c, (dd, ii) in enumerate(zip(dist, ids)):
                ax = fig.add_subplot(gs[row, base + 1 + c])
                ax.imshow(images[di[ii]], cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                wrong = yd[ii] != yq[j]
                for sp in ax.spines.values():
                    sp.set_edgecolor("red" if wrong else "0.8")
                    sp.set_linewidth(2.5 if wrong else 0.5)
                ax.set_xlabel(str(int(dd)), fontsize=7, labelpad=1)
    ax = fig.add_subplot(gs[:, -3:])
    for m, d, r in zip(methods, runs, picked):
        with open(d / "pr.csv", newline="") as f:
            pr = list(csv.DictReader(f))
        ax.plot([float(x["recall"]) for x in pr], [float(x["precision"]) for x in pr], "o-", ms=3,
                label=f"{m} (mAP {float(r['map']):.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"PR (Hamming radius 0..{bits}), {bits} bits", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{picked[0]['dataset']}: top {top} by Hamming distance ({bits} bits, seed {seed}); "
                 f"wrong class framed red, distance below", fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
