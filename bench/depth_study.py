"""Depth study: final method vs the naive penalty ADMM, mAP / forward gap / seconds per sweep.

    python bench/depth_study.py run  --variant final --depths 2,8,16 --bits 12 --sweeps 30
    python bench/depth_study.py run  --variant naive --depths 2,8,16 --bits 12 --sweeps 15
    python bench/depth_study.py report           # reports/depth_study.{md,png,json} from the runs

Every run appends one JSON line (config, mAP, and the per-sweep objective / forward gap /
seconds) to reports/depth_study.jsonl. MNIST test split protocol, width 256 unless --width.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import exp  # noqa: E402

REPORTS = os.path.join(HERE, "..", "reports")
RUNS = os.path.join(REPORTS, "depth_study.jsonl")

#: the naive variant of the issue: plain net, penalties only, auxiliary variables never reset
VARIANTS = {
    "final": {},
    "naive": {"residual": False, "resync": False, "multipliers": False, "penalty_growth": 1.0,
              "input_clip": 0.0, "init": "random"},
}


def cmd_run(a):
    os.makedirs(REPORTS, exist_ok=True)
    extra = json.loads(a.extra) if a.extra else {}
    for L in [int(v) for v in a.depths.split(",")]:
        for bits in [int(v) for v in a.bits.split(",")]:
            kw = {**VARIANTS[a.variant], **extra, "depth": L, "width": a.width, "sweeps": a.sweeps,
                  "bits": bits}
            F = exp.features(a.dataset)
            from vdsh_numba.model import VDSH
            kk = dict(kw)
            b = kk.pop("bits")
            m = VDSH(b, seed=a.seed, **kk)
            m.fit(F["X_train"], F["y_train"])
            mp = exp.mean_ap(m.project(F["X_query"]), m.project(F["X_db"]), F["y_query"], F["y_db"])
            h = m.history_
            rec = {"variant": a.variant, "dataset": a.dataset, "seed": a.seed, **kw, "mAP": round(mp, 4),
                   "s_per_sweep": float(np.median([x["seconds"] for x in h[1:] or h])),
                   "objective": [x["objective"] for x in h], "forward_gap": [x["forward_gap"] for x in h],
                   "seconds": [x["seconds"] for x in h], "dense_seconds": [x["dense_seconds"] for x in h]}
            print(json.dumps({k: v for k, v in rec.items() if not isinstance(v, list)}), flush=True)
            with open(RUNS, "a") as f:
                f.write(json.dumps(rec) + "\n")


def cmd_report(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    recs = [json.loads(x) for x in open(RUNS)]
    rows = ["| variant | depth | width | bits | sweeps | mAP | forward gap (sweep 2 → last) | "
            "objective (first → last) | s/sweep |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["variant"], r["bits"], r["depth"])):
        g = r["forward_gap"]
        rows.append(f"| {r['variant']} | {r['depth']} | {r['width']} | {r['bits']} | {r['sweeps']} | "
                    f"{r['mAP']:.4f} | {g[1] if len(g) > 1 else float('nan'):.3f} → {g[-1]:.3f} | "
                    f"{r['objective'][0]:.4f} → {r['objective'][-1]:.4f} | {r['s_per_sweep']:.2f} |")
    with open(os.path.join(REPORTS, "depth_study_table.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))
    fig, ax = plt.subplots(1, 4, figsize=(18, 4))
    for v, mk in (("final", "o-"), ("final-skip1", "^-"), ("naive", "s--")):
        rr = sorted([r for r in recs if r["variant"] == v and r["bits"] == 12 and r["width"] == 256],
                    key=lambda r: r["depth"])
        if not rr:
            continue
        ax[0].plot([r["depth"] for r in rr], [r["mAP"] for r in rr], mk, label=v)
        ax[1].plot([r["depth"] for r in rr], [r["s_per_sweep"] for r in rr], mk, label=v)
        for r in rr:
            ax[2].plot(r["objective"], mk[1:], label=f"{v} L={r['depth']}")
            ax[3].plot(range(2, len(r["forward_gap"]) + 1), r["forward_gap"][1:], mk[1:],
                       label=f"{v} L={r['depth']}")
    ax[0].set(xscale="log", xlabel="depth", ylabel="mAP (12 bits, MNIST test split)")
    ax[1].set(xlabel="depth", ylabel="s / sweep (shared 2-core CPU)")
    ax[2].set(xlabel="sweep", ylabel="objective", yscale="log")
    ax[3].set(xlabel="sweep", ylabel="forward-vs-auxiliary gap")
    for x in ax:
        x.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(REPORTS, "depth_study.png"), dpi=90)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--variant", choices=sorted(VARIANTS), default="final")
    r.add_argument("--depths", default="2,8,16")
    r.add_argument("--bits", default="12")
    r.add_argument("--width", type=int, default=256)
    r.add_argument("--sweeps", type=int, default=30)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dataset", default="mnist")
    r.add_argument("--extra", default="", help="JSON of extra training parameters")
    sub.add_parser("report")
    a = ap.parse_args()
    cmd_run(a) if a.cmd == "run" else cmd_report(a)
