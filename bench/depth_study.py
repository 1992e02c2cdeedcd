"""Depth study: VDSH by layer-wise ADMM (final and naive) against VDSH by backpropagation.

    NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=. \\
        python bench/depth_study.py run --variant final --depths 2,4,8,16,32,64
    ... run --variant naive --depths 2,4,8,16,32,64 --sweeps 30
    ... run --variant backprop --depths 2,4,8,16,32,64
    ... run --variant backprop_residual --depths 2,4,8,16,32,64
    ... run --variant final --depths 64 --width 1024 --sweeps 30
    python bench/depth_study.py report     # reports/depth_study.{md,png} from reports/depth_study.jsonl

Variants (32 bits, width 256, seed 0 unless given):

* ``final``: :class:`vdsh_numba.vdsh.VDSH` with the library defaults (``TRAIN_DEFAULTS``, checked
  equal to params.yaml's ``train`` section at every run).
* ``naive``: the same ADMM without the final method's devices: a plain net, penalties only (no
  multipliers, no penalty growth), auxiliary variables never reset to the forward pass, no input
  clipping, a random first layer (``first_width`` stays the default).
* ``backprop`` / ``backprop_residual``: ``make_method("vdsh_backprop"/"vdsh_backprop_residual")``
  from params.yaml (``baselines.<name>``, e.g. 40 epochs of Adam) with the depth, width, seed given.

Every run is scored the same way: :func:`vdsh_numba.metrics.mean_average_precision` on the packed
codes of ``model.encode`` (whole ranking, ties by database index), and appends one JSON line
(config, mAP, seconds; for ADMM the per-sweep objective / forward gap / seconds; for backprop the
per-epoch loss and seconds) to reports/depth_study.jsonl, the raw record. MNIST test-split
protocol (bench/exp.py: 100 queries per class, the other 9,000 as database, 500 training images
per class drawn from the database, global standardization).
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import exp  # noqa: E402
from vdsh_numba.params import load_params  # noqa: E402

REPORTS = os.path.join(ROOT, "reports")
RUNS = os.path.join(REPORTS, "depth_study.jsonl")

#: ADMM variants: overrides of the library defaults
ADMM = {
    "final": {},
    # the naive variant of issue 3: plain net, penalties only, auxiliary variables never reset
    "naive": {"residual": False, "resync": False, "multipliers": False, "penalty_growth": 1.0,
              "input_clip": 0.0, "init": "random"},
}
#: backprop variants: registered method names (settings from params.yaml baselines.<name>)
BACKPROP = {"backprop": "vdsh_backprop", "backprop_residual": "vdsh_backprop_residual"}
VARIANTS = sorted(ADMM) + sorted(BACKPROP)
#: what the report shows, in order: ``<variant>_tuned`` = run with ``--tuned`` (learning rate
#: per depth from the validation split); ``backprop_residual_unscaled`` = runs before the
#: residual branches were scaled at initialisation (kept as the record of that failure)
REPORTED = ["final", "naive", "backprop", "backprop_tuned", "backprop_residual",
            "backprop_residual_tuned", "backprop_residual_unscaled"]
STYLE = {"final": ("o-", "C0"), "naive": ("s--", "C3"), "backprop": ("^-", "C2"),
         "backprop_tuned": ("^-", "C4"), "backprop_residual": ("v-", "C1"),
         "backprop_residual_tuned": ("v-", "C1"), "backprop_residual_unscaled": ("v:", "C7")}
TUNING = os.path.join(REPORTS, "tuning.jsonl")


def tuned_lr(method, depth, width, bits=32):
    """The learning rate with the best validation mAP in reports/tuning.jsonl (bench/tune.py)."""
    best = None
    for line in open(TUNING):
        r = json.loads(line)
        if (r["method"], r["depth"], r["width"], r["bits"]) == (method, depth, width, bits) \
                and r.get("init") != "he-unscaled" and "lr" in r:
            if best is None or r["val_mAP"] > best["val_mAP"]:
                best = r
    if best is None:
        raise SystemExit(f"no validation run of {method} at depth {depth}, width {width}, "
                         f"{bits} bits in {TUNING}: run bench/tune.py first")
    return best["lr"]


def check_defaults(params):
    """``final`` = the library defaults; they must be params.yaml's train section."""
    from vdsh_numba.vdsh import TRAIN_DEFAULTS
    diff = {k: (TRAIN_DEFAULTS.get(k), v) for k, v in (params.get("train") or {}).items()
            if TRAIN_DEFAULTS.get(k) != v}
    diff.update({k: (v, None) for k, v in TRAIN_DEFAULTS.items() if k not in (params.get("train") or {})})
    if diff:
        raise SystemExit(f"VDSH TRAIN_DEFAULTS differ from params.yaml train (default, yaml): {diff}")


def score(m, F, bits):
    from vdsh_numba.metrics import mean_average_precision
    t = time.perf_counter()
    mp = mean_average_precision(m.encode(F["X_query"]), m.encode(F["X_db"]), F["y_query"], F["y_db"],
                                ties="index", bits=bits)
    return float(mp), time.perf_counter() - t


def run_admm(variant, F, bits, depth, width, seed, sweeps, extra, every=0):
    from vdsh_numba.vdsh import VDSH
    kw = {**ADMM[variant], **extra, "sweeps": sweeps}
    m = VDSH(bits, depth=depth, width=width, seed=seed, **kw)
    curve, mon = [], [0.0]
    if every:  # mAP during training (same evaluator; its seconds are outside the sweeps' clocks)
        def cb(it, mm):
            if (it + 1) % every == 0 and it + 1 < sweeps:
                mp, secs = score(mm, F, bits)
                mon[0] += secs
                curve.append([it + 1, round(mp, 6)])
                h = mm.history_[-1]
                print(f"  sweep {it + 1}: mAP {curve[-1][1]:.4f} gap {h['forward_gap']:.4f} "
                      f"obj {h['objective']:.5f} {h['seconds']:.1f}s", flush=True)
        m.on_sweep = cb
    m.fit(F["X_train"], F["y_train"])
    h = m.history_
    sec = [x["seconds"] for x in h]
    return m, {"train": {**m.train}, "sweeps": sweeps,
               "s_per_sweep": float(np.median(sec[1:] or sec)),
               "objective": [x["objective"] for x in h], "forward_gap": [x["forward_gap"] for x in h],
               "seconds": sec, "dense_seconds": [x["dense_seconds"] for x in h],
               "bit_agreement": [x["bit_agreement"] for x in h], "mAP_curve": curve,
               "monitor_seconds": round(mon[0], 2)}


def run_backprop(variant, F, bits, depth, width, seed, epochs, extra, params):
    from tune import with_setting
    from vdsh_numba.base import make_method
    name = BACKPROP[variant]
    p = with_setting(params, name, depth, width, {**extra, **({"epochs": epochs} if epochs else {})})
    p["seed"] = seed
    m = make_method(name, bits, p)
    stamps = []
    start = m._epoch_start

    def timed(epoch, X):  # per-epoch wall clock (the history holds only the loss)
        stamps.append(time.perf_counter())
        return start(epoch, X)
    m._epoch_start = timed
    m.fit(F["X_train"], F["y_train"])
    end = stamps[0] + m.train_seconds_ if stamps else None  # fit's clock ends after the last epoch
    ends = stamps[1:] + [time.perf_counter() if end is None else max(end, stamps[-1])]
    sec = [b - a for a, b in zip(stamps, ends)]
    return m, {"hyper": m.get_params(), "epochs": m.epochs,
               "s_per_epoch": float(np.median(sec)) if sec else None,
               "loss": [x["loss"] for x in m.history_], "seconds": sec}


def cmd_run(a):
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    params = load_params(os.path.join(ROOT, "params.yaml"))
    check_defaults(params)
    extra = json.loads(a.extra) if a.extra else {}
    F = exp.features(a.dataset)
    for L in [int(v) for v in a.depths.split(",")]:
        for bits in [int(v) for v in a.bits.split(",")]:
            t0 = time.perf_counter()
            if a.variant in ADMM:
                m, rec = run_admm(a.variant, F, bits, L, a.width, a.seed,
                                  a.sweeps or params["train"]["sweeps"], extra, a.every)
            else:
                ex = dict(extra)
                if a.tuned:
                    ex["lr"] = tuned_lr(BACKPROP[a.variant], L, a.width, bits)
                m, rec = run_backprop(a.variant, F, bits, L, a.width, a.seed, a.sweeps, ex, params)
            mp, eval_s = score(m, F, bits)
            name = a.variant + ("_tuned" if a.tuned and a.variant in BACKPROP else "")
            rec = {"variant": name, "dataset": a.dataset, "seed": a.seed, "bits": bits,
                   "depth": L, "width": a.width, "n_train": int(F["X_train"].shape[0]),
                   "n_query": int(F["X_query"].shape[0]), "n_db": int(F["X_db"].shape[0]),
                   "split_seed": 0, "mAP": round(mp, 6), "train_seconds": round(m.train_seconds_ - rec.get("monitor_seconds", 0.0), 2),
                   "eval_seconds": round(eval_s, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
                   "extra": ex if a.variant in BACKPROP else extra, "threads": {k: os.environ.get(k) for k in
                                               ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
                   "host": platform.node(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   **rec}
            print(json.dumps({k: v for k, v in rec.items() if not isinstance(v, (list, dict))}), flush=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")


def _iters(r):
    return r.get("sweeps") or r.get("epochs")


def _per_iter(r):
    return r.get("s_per_sweep") if r["variant"] in ADMM else r.get("s_per_epoch")


def _first_gap(g):
    """Index of the first logged (finite) forward gap (sweep 1 has no auxiliaries yet to compare)."""
    return next((i for i, x in enumerate(g) if x is not None and np.isfinite(x)), len(g) - 1)


def table(recs):
    rows = ["| variant | depth | width | seed | sweeps / epochs | mAP | forward gap (first logged → last) | "
            "objective (first → last) | s / sweep or epoch | train s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (REPORTED.index(r["variant"]), r["width"], r["depth"], r["seed"])):
        if r["variant"] in ADMM:
            g, o = r["forward_gap"], r["objective"]
            i = _first_gap(g)
            gap = f"{g[i]:.3f} (sweep {i + 1}) → {g[-1]:.4f}"
            obj = f"{o[0]:.4f} → {o[-1]:.4f}"
        else:
            gap = "–"
            obj = f"loss {r['loss'][0]:.4g} → {r['loss'][-1]:.4g}"
        rows.append(f"| {r['variant']} | {r['depth']} | {r['width']} | {r['seed']} | {_iters(r)} | "
                    f"{r['mAP']:.4f} | {gap} | {obj} | {_per_iter(r):.2f} | {r['train_seconds']:.0f} |")
    return rows


def goals(recs):
    """Issue 3's depth goals from the seed-0, width-256 runs (and the width-1024 one)."""
    base = {(r["variant"], r["depth"]): r for r in recs if r["width"] == 256 and r["seed"] == 0}
    out = []
    fin = {d: r for (v, d), r in base.items() if v == "final"}
    if fin:
        best_d = max(fin, key=lambda d: fin[d]["mAP"])
        best = fin[best_d]["mAP"]
        out.append(f"* best `final` depth (width 256, seed 0): {best_d} at mAP {best:.4f}.")
        for r in [fin.get(64)] + [r for r in recs if r["variant"] == "final" and r["width"] != 256
                                  and r["depth"] == 64]:
            if r is None:
                continue
            d = r["mAP"] - best
            out.append(f"* `final` depth 64, width {r['width']} ({_iters(r)} sweeps): {r['mAP']:.4f}, "
                       f"{d:+.4f} vs the best depth — goal (≥ best − 0.01) "
                       f"**{'met' if d >= -0.01 else 'missed'}**.")
        for v in REPORTED[2:]:
            ds = sorted(d for (vv, d) in base if vv == v and d in fin)
            if not ds:
                continue
            diffs = [fin[d]["mAP"] - base[v, d]["mAP"] for d in ds]
            above = [d for d, x in zip(ds, diffs) if x > 0]
            out.append(f"* `final` − `{v}` per depth: "
                       + ", ".join(f"{d}: {x:+.4f}" for d, x in zip(ds, diffs))
                       + f" — above at {len(above)}/{len(ds)} depths.")
    conv = [r for r in recs if r["variant"] == "final"]
    if conv:  # issue 3's convergence goal: no divergence, objective and gap end below their start
        fin_ok = [r for r in conv if np.all(np.isfinite(r["objective"]))]
        obj_ok = [r for r in conv if r["objective"][-1] < r["objective"][0]]
        gap_ok = [r for r in conv if r["forward_gap"][-1] < r["forward_gap"][_first_gap(r["forward_gap"])]]
        per = {}
        for r in conv:
            per.setdefault((r["depth"], r["width"]), []).append(r["seed"])
        out.append(f"* convergence of `final` over {len(conv)} runs ("
                   + "; ".join(f"depth {d}{'' if w == 256 else f' x {w}'}: seeds {sorted(v)}"
                               for (d, w), v in sorted(per.items()))
                   + f"): finite objective in {len(fin_ok)}/{len(conv)}, objective ends below its "
                   f"start in {len(obj_ok)}/{len(conv)}, forward gap ends below its first logged "
                   f"value in {len(gap_ok)}/{len(conv)}; largest last gap "
                   f"{max(r['forward_gap'][-1] for r in conv):.4f}.")
    for v in REPORTED:  # every (variant, depth) run with more than one seed
        for d in sorted({r["depth"] for r in recs if r["variant"] == v}):
            rs = [r for r in recs if r["variant"] == v and r["width"] == 256 and r["depth"] == d]
            if len({r["seed"] for r in rs}) > 1:
                x = np.array([r["mAP"] for r in rs])
                out.append(f"* `{v}` depth {d} over seeds {sorted(r['seed'] for r in rs)}: mAP "
                           f"{x.mean():.4f} ± {x.std(ddof=1):.4f} (mean ± sample std; range "
                           f"{x.min():.4f}–{x.max():.4f}).")
    return out


def plot(recs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401
    fig, ax = plt.subplots(2, 3, figsize=(17, 9))
    ax = ax.ravel()
    for v in REPORTED:
        mk, c = STYLE[v]
        rr = sorted([r for r in recs if r["variant"] == v and r["width"] == 256 and r["seed"] == 0],
                    key=lambda r: r["depth"])
        if not rr:
            continue
        lab = f"{v} ({_iters(rr[0])} {'sweeps' if v in ADMM else 'epochs'})"
        D = [r["depth"] for r in rr]
        ax[0].plot(D, [r["mAP"] for r in rr], mk, color=c, label=lab)
        ax[1].plot(D, [r["train_seconds"] for r in rr], mk, color=c, label=lab)
        ax[2].plot(D, [_per_iter(r) for r in rr], mk, color=c, label=lab)
        if v in ADMM:
            ax[3].plot(D, [r["forward_gap"][-1] for r in rr], mk, color=c, label=f"{v}: last sweep")
            ax[3].plot(D, [r["forward_gap"][_first_gap(r["forward_gap"])] for r in rr], mk[0] + ":",
                       color=c, alpha=0.6, label=f"{v}: first logged sweep")
            for r in rr:
                al = 0.3 + 0.7 * np.log2(r["depth"]) / 6
                ax[4].plot(range(1, len(r["forward_gap"]) + 1), r["forward_gap"], mk[1:], color=c,
                           alpha=al, label=f"{v} L={r['depth']}")
                ax[5].plot(range(1, len(r["objective"]) + 1), r["objective"], mk[1:], color=c,
                           alpha=al, label=f"{v} L={r['depth']}")
    for v in REPORTED:
        seeds = [r for r in recs if r["variant"] == v and r["width"] == 256 and r["seed"] != 0]
        if seeds:
            ax[0].plot([r["depth"] for r in seeds], [r["mAP"] for r in seeds], STYLE[v][0][0], mfc="none",
                       color=STYLE[v][1], label=f"{v}, seeds 1, 2")
    for r in recs:
        if r["width"] != 256:
            lab = f"{r['variant']} width {r['width']} ({_iters(r)} sweeps)"
            for i, y in ((0, r["mAP"]), (1, r["train_seconds"]), (2, _per_iter(r))):
                ax[i].plot([r["depth"]], [y], "*", ms=14, color="k", label=lab)
            if r["variant"] in ADMM:
                ax[3].plot([r["depth"]], [r["forward_gap"][-1]], "*", ms=14, color="k", label=lab)
                ax[4].plot(range(1, len(r["forward_gap"]) + 1), r["forward_gap"], "k-", lw=2, label=lab)
                ax[5].plot(range(1, len(r["objective"]) + 1), r["objective"], "k-", lw=2, label=lab)
    ax[0].set(xscale="log", xlabel="depth (hidden layers)", ylabel="mAP (32 bits, MNIST test split)",
              title="mAP vs depth")
    ax[1].set(xscale="log", yscale="log", xlabel="depth", ylabel="training seconds (1 thread, shared CPU)",
              title="training time vs depth")
    ax[2].set(xscale="log", yscale="log", xlabel="depth", ylabel="median s per sweep (ADMM) / epoch (backprop)",
              title="seconds per iteration vs depth")
    ax[3].set(xscale="log", yscale="log", xlabel="depth", ylabel="forward gap",
              title="ADMM forward-vs-auxiliary gap vs depth")
    ax[4].set(yscale="log", xlabel="sweep", ylabel="forward gap", title="ADMM forward gap per sweep")
    ax[5].set(yscale="log", xlabel="sweep", ylabel="objective", title="ADMM objective per sweep")
    for x in ax[:4]:
        x.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        x.set_xticks([2, 4, 8, 16, 32, 64])
        x.set_xticklabels(["2", "4", "8", "16", "32", "64"])
        x.legend(fontsize=7)
    for x in ax[4:]:
        x.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


NOTES_FILE = os.path.join(HERE, "depth_study_notes.md")


def cmd_report(a):
    recs = [json.loads(x) for x in open(a.out) if x.strip()]
    rows = table(recs)
    g = goals(recs)
    plot(recs, os.path.join(REPORTS, "depth_study.png"))
    notes = open(NOTES_FILE).read().strip() + "\n\n" if os.path.exists(NOTES_FILE) else ""
    md = ["# Depth study: VDSH by layer-wise ADMM vs VDSH by backpropagation (issues 3 and 6)", "",
          "MNIST test-split protocol (`bench/exp.py: features`): 1,000 queries (100 per class), "
          "the other 9,000 images as database, 5,000 training images (500 per class, drawn from the "
          "database), global standardization; 32 bits, width 256, seed 0 unless the row says "
          "otherwise. Every model is scored identically: `vdsh_numba.metrics.mean_average_precision` "
          "on the packed codes of `model.encode`, whole ranking, ties by database index. One run per row (seeds 1 and 2 "
          "only where listed); all single-threaded (`NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`) on a "
          "2-core machine shared with other jobs, so seconds are indicative: the load from the other jobs varied during the study.", "",
          "* `final`: `VDSH` with the library defaults = params.yaml `train` (60 sweeps, residual "
          "skips, re-synchronised auxiliaries, multipliers, penalty growth, ridge first layer of "
          "1,024 units).",
          "* `naive`: the same ADMM as a plain net with penalties only: `residual=false, resync=false, "
          "multipliers=false, penalty_growth=1, input_clip=0, init=random` (other settings default, including the 1,024-unit first layer).",
          "* `backprop`: the VDSH objective (tanh relaxation) trained end to end by Adam, params.yaml "
          "`baselines.vdsh_backprop` (40 epochs, batch 128, lr 1e-3), plain net; width 256 in every "
          "hidden layer (no wide first layer).",
          "* `backprop_tuned` / `backprop_residual_tuned`: `vdsh_backprop` / `vdsh_backprop_residual` "
          "(identity shortcuts between hidden layers, branches initialised at He/depth) with the "
          "learning rate chosen per depth from {1e-4, 3e-4, 1e-3} on the validation split of "
          "docs/protocols.md (`bench/tune.py`, reports/tuning.jsonl; the `extra` column of the raw "
          "record holds the value): `run --tuned`.",
          "* `backprop_residual_unscaled`: `vdsh_backprop_residual` at lr 1e-3 *before* the residual "
          "branches were scaled at initialisation (unit-scale He branches), kept as the record of "
          "that failure.", "",
          "Forward gap: `||a_L^aux - a_L^fwd|| / ||a_L^fwd||`, the top hidden layer's auxiliary "
          "activations against a forward pass of the current weights, logged at the start of every "
          "sweep before the re-synchronisation (`history_[i]['forward_gap']`, docs/algorithm.md "
          "section 4); the first sweep has nothing to compare yet, so the first logged value is "
          "sweep 2's.", "", "![depth study](depth_study.png)", "", "## Results", ""] + rows + [
          "", "## Issue 3 goals", ""] + g + ["", notes + "## Commands", "", "```sh",
          "export NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=.",
          "python bench/depth_study.py run --variant final --depths 2,4,8,16,32,64",
          "python bench/depth_study.py run --variant naive --depths 2,4,8,16,32,64 --sweeps 30",
          "python bench/depth_study.py run --variant backprop --depths 2,4,8,16,32,64",
          "python bench/depth_study.py run --variant backprop --depths 2,4,8,16,32,64 --tuned   # after bench/tune.py, docs/protocols.md",
          "python bench/depth_study.py run --variant backprop_residual --depths 2,4,8,16,32,64 --tuned",
          "python bench/depth_study.py run --variant final --depths 64 --width 1024 --sweeps 30 --every 10",
          "for s in 1 2 3 4 5 6 7 8 9; do python bench/depth_study.py run --variant final --depths 4,16,64 --seed $s; done",
          "python bench/depth_study.py run --variant backprop --depths 2,16 --seed 1   # and --seed 2",
          "python bench/depth_study.py report   # this file and depth_study.png from depth_study.jsonl",
          "```", "", "Raw record: `reports/depth_study.jsonl` (one JSON line per run: configuration, "
          "mAP, per-sweep objective / forward gap / seconds, per-epoch loss / seconds, timing)."]
    with open(os.path.join(REPORTS, "depth_study.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(rows + [""] + g))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--variant", choices=VARIANTS, default="final")
    r.add_argument("--depths", default="2,4,8,16,32,64")
    r.add_argument("--bits", default="32")
    r.add_argument("--width", type=int, default=256)
    r.add_argument("--sweeps", type=int, default=0,
                   help="ADMM sweeps / backprop epochs (0: params.yaml's)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dataset", default="mnist")
    r.add_argument("--extra", default="", help="JSON of extra training parameters")
    r.add_argument("--every", type=int, default=0, help="ADMM: also log mAP every N sweeps")
    r.add_argument("--tuned", action="store_true",
                   help="backprop: the learning rate per depth from reports/tuning.jsonl")
    r.add_argument("--out", default=RUNS)
    p = sub.add_parser("report")
    p.add_argument("--out", default=RUNS)
    a = ap.parse_args()
    cmd_run(a) if a.cmd == "run" else cmd_report(a)
