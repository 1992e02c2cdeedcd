"""Stage ``report``: every method x code length -> ``reports/metrics.json`` (DVC metrics),
``results.md``/``.csv`` and the PNG plots."""
from __future__ import annotations

from ..io import atomic_path, read_json, write_json, write_text
from .layout import Layout
from .params import as_config

__all__ = ["run", "KEYS"]

#: fields every method x code length carries in reports/metrics.json
KEYS = ("map", "map_tie_aware", "precision_hamming2", "train_seconds")


def _collect(params, layout):
    res = {}
    for m in params["methods"]:
        for b in params["bits"]:
            p = layout.eval(m, b)
            if not p.exists():
                raise FileNotFoundError(f"{p} is missing: run the evaluate stage for {m} at {b} bits")
            res[(m, b)] = read_json(p)
    curves = {}
    for m in params["methods"]:
        for b in params["bits"]:
            p = layout.curve(m, b)
            if p.exists() and p.stat().st_size:
                import pandas as pd
                curves[(m, b)] = pd.read_csv(p)
    return res, curves


def run(params, layout=Layout()):
    params = as_config(params)
    import pandas as pd
    out = layout.reports
    res, curves = _collect(params, layout)
    metrics = {}
    for (m, b), r in res.items():
        metrics.setdefault(m, {})[f"bits_{b}"] = {k: r[k] for k in KEYS if k in r} | {
            k: r[k] for k in r if k not in KEYS and isinstance(r[k], (int, float))}
    any_r = next(iter(res.values()))
    metrics["_meta"] = {"dataset": any_r["dataset"], "subset": any_r["subset"]}
    write_json(out / "metrics.json", metrics)
    proto = f"{any_r['n_query']} queries / {any_r['n_db']} database / {any_r['n_train']} train"
    rows = []
    for (m, b), r in sorted(res.items(), key=lambda t: (t[0][0], t[0][1])):
        rows.append({"method": m, "dataset": r["dataset"] + ("" if r["subset"] == "full" else f" ({r['subset']})"),
                     "protocol": proto, "depth": params["depth"], "width": params["width"], "bits": b,
                     "mAP": r["map"], "mAP (tie-aware)": r["map_tie_aware"],
                     "P@H<=2": r["precision_hamming2"], "train s": r["train_seconds"]})
    df = pd.DataFrame(rows)
    with atomic_path(out / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_text(out / "results.md", "# Results\n\n" + _markdown(df) + "\n")
    _plots(params, res, curves, out)


def _markdown(df):
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plots(params, res, curves, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in params["methods"]:
        bs = sorted(params["bits"])
        ax.plot(bs, [res[(m, b)]["map"] for b in bs], "o-", label=m)
    ax.set_xlabel("code length (bits)")
    ax.set_ylabel("mAP")
    ax.set_title(f"{next(iter(res.values()))['dataset']}: mAP vs code length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "map_vs_bits.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for (m, b), c in curves.items():
        if "objective" in c:
            axes[0].semilogy(c["iteration"], c["objective"], label=f"{m} {b}b")
        if "forward_gap" in c:
            axes[1].plot(c["iteration"], c["forward_gap"], label=f"{m} {b}b")
    axes[0].set_title("objective")
    axes[1].set_title("forward-vs-auxiliary gap")
    for a in axes:
        a.set_xlabel("ADMM sweep")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "training_curves.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
