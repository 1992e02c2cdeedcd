"""The consensus scheme of VDSH (vdsh.scheme: consensus, docs/algorithm.md §10) measured.

    # a. seconds per sweep at depth 64 x 1024 (n = 5,000): 1 and 2 threads, 1 and 2 Dask workers,
    #    against sequential's seconds per sweep (needs both cores: run it with every other job paused)
    NUMBA_NUM_THREADS=2 python bench/consensus.py speed --dataset fashion_mnist
    # b. cost vs depth and vs width^2 at small n, linear fits with R^2
    python bench/consensus.py edges
    # c. convergence: 32 bits, depth {4, 16, 64}, mnist (test-only) and fashion_mnist, seeds;
    #    appends to its CSV and skips the runs already there (resumable), then --plot
    python bench/consensus.py converge --seeds 0 1 2 [--local through]
    python bench/consensus.py plot [--local through]
    python bench/consensus.py model    # scaling model from the speed CSV (a prediction)
    python bench/consensus.py digits   # sequential vs consensus variants on sklearn digits
    python bench/consensus.py gil      # which calls release the GIL

Every timing comes from the engine's own history rows (``seconds`` of each sweep, after
``ops.synchronize()``), so the schemes are timed by the same clock. Every run prints the load
average; a ratio measured at a load above 0.5 per core is marked unreliable. Outputs go to
reports/bench/ (speed, edges) and reports/studies/ (convergence).
"""
import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the script's folder holds bench/distributed.py, which would shadow Dask's `distributed` here and
# in the worker processes (they inherit sys.path): put the repository root in its place
sys.path = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
from vdsh_numba.data.datasets import FASHION_MNIST_SYSTEM_DIR  # noqa: E402
from vdsh_numba.methods.vdsh import VDSH  # noqa: E402

#: MNIST's test set from ../shared beside the checkout; Fashion-MNIST from Debian's package
DATA_DIRS = {"mnist": str(ROOT.parent / "shared" / "data" / "mnist"),
             "fashion_mnist": str(FASHION_MNIST_SYSTEM_DIR)}
BENCH, STUDIES = ROOT / "reports" / "bench", ROOT / "reports" / "studies"


def load(cpu=os.cpu_count() or 1):
    la = os.getloadavg()[0]
    return la, la / cpu > 0.5


def machine_busy_seconds():
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``), or ``None``."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def tree_seconds(root=None):
    """CPU seconds of this process and every process below it (the Dask scheduler's workers and
    nannies are children of it), from ``/proc/<pid>/stat``."""
    root = root or os.getpid()
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            stats[int(d)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK"))
    kids = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += kids.get(pid, [])
    return total


def others_cores(t0, busy0, own0):
    """Cores' worth of CPU that processes outside this benchmark's tree used since
    ``(perf_counter, machine_busy_seconds, tree_seconds)`` = ``(t0, busy0, own0)``; a process
    of the tree that ended meanwhile (a closed Dask worker) counts as other, so this errs high."""
    busy = machine_busy_seconds()
    if busy is None or busy0 is None:
        return float("nan")
    return max(0.0, (busy - busy0) - (tree_seconds() - own0)) / max(time.perf_counter() - t0, 1e-9)


def release_memory():
    """Hands the memory of a finished fit back to the system (``gc``, then glibc's
    ``malloc_trim``) before the next setting: glibc's heaps keep what a fit freed. A depth 64 x
    1024 run of 5 sweeps per setting without it: the machine's used memory went from 11.8 GB
    during the 1-thread fit to 22.9 GB during the 2-thread fit, and the OOM killer stopped the
    benchmark (13.2 GB) as the 1-worker Dask fit ended."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def features(dataset, seed=0):
    """The standard protocol's split of ``dataset`` (mnist: test-only, 10,000 images;
    fashion_mnist: queries from its test set), as the features stage builds it."""
    from vdsh_numba.data.datasets import load_dataset
    from vdsh_numba.data.features import build_features, protocol_indices, resolve_protocol
    raw = load_dataset(dataset, DATA_DIRS[dataset], progress=False)
    proto = resolve_protocol(dataset, {})
    idx = protocol_indices(raw.labels, proto, raw.info, seed)
    return build_features(raw.images, raw.labels, raw.info["max_value"], proto["queries_per_class"],
                          proto["train_per_class"], seed, indices=idx)


def write_csv(path, rows, append=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not (append and path.exists())
    with open(path, "a" if append else "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


def linfit(x, y):
    """Least-squares line ``y = a + b x`` and its R^2."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    r2 = 1 - ((y - a - b * x) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    return a, b, r2


# ------------------------------------------------------------------------------------------ a. speed

def speed(a):
    F = features(a.dataset)
    X, y = F["X_train"][:a.n], F["y_train"][:a.n]
    la0, _ = load()
    first = a.first_width or a.width
    print(f"speed: {a.dataset} n={X.shape[0]} depth={a.depth} width={a.width} first_width={first} "
          f"{a.bits} bits, {a.sweeps} sweeps each; load average at start {la0:.2f} on {os.cpu_count()} cores",
          flush=True)
    kw = dict(depth=a.depth, width=a.width, first_width=first, seed=0, sweeps=a.sweeps)
    # (scheme, scheduler, workers, BLAS threads of the calling process): sequential on 1 and on 2
    # cores (BLAS threads); consensus's forward pass and code step keep 1 BLAS thread whatever
    # the workers (OpenBLAS with 2 threads gives other bits, and the placement must not change them)
    configs = [("sequential", "serial", 1, 1), ("consensus", "threads", 1, 1), ("consensus", "threads", 2, 1),
               ("consensus", "distributed", 1, 1), ("consensus", "distributed", 2, 1),
               ("sequential", "serial", 1, 2)]
    if a.threads_only:
        configs = [c for c in configs if c[1] != "distributed"]
    if a.dask_only:  # the consensus rows only: threads as the anchor, Dask beside them
        configs = [c for c in configs if c[0] == "consensus"]
    if a.no_threads:  # the Dask rows alone (the threads' ratio from another run)
        configs = [c for c in configs if c[1] == "distributed"]
    rows, weights = [], {}
    from threadpoolctl import threadpool_limits
    import numba
    for scheme, sched, w, blas in configs:
        numba.set_num_threads(min(blas, numba.config.NUMBA_NUM_THREADS))  # the prange kernels too
        est = VDSH(a.bits, scheme=scheme, scheduler=sched, workers=w, **kw)
        close, sent = None, float("nan")
        if sched == "distributed":  # our own cluster, to read the bytes its workers sent
            from vdsh_numba.methods.vdsh.executors import worker_bytes_sent
            from vdsh_numba.search.distributed import local_cluster
            cluster, est.client = local_cluster(n_workers=w)
            close = cluster.close
        t0, busy0, own0 = time.perf_counter(), machine_busy_seconds(), tree_seconds()
        with threadpool_limits(limits=blas):
            m = est.fit(X, y)
        wall = time.perf_counter() - t0
        others = others_cores(t0, busy0, own0)
        if close is not None:
            sent = worker_bytes_sent(est.client) / a.sweeps
            est.client.close()
            close()
        secs = [h["seconds"] for h in m.history_]
        la, busy = load()
        row = {"scheme": scheme, "scheduler": sched, "workers": w, "blas_threads": blas, "n": X.shape[0],
               "depth": a.depth, "first_width": first,
               "width": a.width, "sweep_seconds": json.dumps([round(s, 3) for s in secs]),
               "median_sweep_s": float(np.median(secs)), "fit_wall_s": wall, "load": la,
               "median_dense_s": float(np.median([h["dense_seconds"] for h in m.history_])),
               "others_cores": others, "worker_bytes_per_sweep": sent}
        rows.append(row)
        weights[(scheme, sched, w, blas)] = [m.W_[0], m.W_[-1], m.Wo_, m.B_train_]
        extra = f"; workers sent {sent / 1e9:.3f} GB per sweep" if sent == sent else ""
        print(f"  {scheme:10s} {sched:11s} workers={w} blas={blas}: sweeps {row['sweep_seconds']} s, median "
              f"{row['median_sweep_s']:.2f} s; fit {wall:.1f} s; load {la:.2f}, other processes {others:.2f} "
              f"cores{extra}", flush=True)
        write_csv(BENCH / (a.csv or ("consensus_speed_threads.csv" if a.threads_only else "consensus_speed.csv")), rows)
        del est, m
        release_memory()
    med = {(r["scheme"], r["scheduler"], r["workers"], r["blas_threads"]): r["median_sweep_s"] for r in rows}
    la1, busy = load()
    # the load average counts this benchmark's own threads and workers; what decides is the CPU
    # other processes used during the fits (more than 0.5 core per core: unreliable)
    worst = max(r["others_cores"] for r in rows)
    flag = (f"  [unreliable: other processes used up to {worst:.2f} cores]"
            if not worst <= 0.5 * (os.cpu_count() or 1) else f"  [other processes at most {worst:.2f} cores]")
    seq = med.get(("sequential", "serial", 1, 1), float("nan"))
    for sched in dict.fromkeys(k[1] for k in med if k[0] == "consensus"):  # the schedulers that ran
        r = med[("consensus", sched, 2, 1)] / med[("consensus", sched, 1, 1)]
        print(f"{sched}: 2 workers / 1 worker = {r:.2f} (goal <= 0.6){flag}")
    for key, v in med.items():
        print(f"{key[0]} {key[1]} workers {key[2]} blas {key[3]}: {v:.2f} s per sweep = {v / seq:.2f} x "
              f"sequential on 1 core")
    anchor = next(k for k in weights if k[0] == "consensus")  # threads/1, or Dask/1 with --no-threads
    ref = weights[anchor]
    same = {k: all(np.array_equal(p, q) for p, q in zip(ref, v)) for k, v in weights.items() if k[0] == "consensus"}
    print(f"consensus weights and codes bitwise equal to {anchor[1]}/{anchor[2]}: {same}")
    print(f"load average at end {la1:.2f}")


# ------------------------------------------------------------------------------------------ scaling model

def model(a):
    """A prediction from a speed CSV (``--speed-csv``, docs/algorithm.md §10.9): the sweep time of
    depth ``a.depth`` x ``a.width`` on ``a.n`` samples with 1, 8, 64 workers of a neighbour
    placement (contiguous blocks of layers per worker, per-sample state resident).

    Split of the measured 1-worker consensus sweep ``T1`` into a serial part ``s`` and the
    tasks ``p = T1 - s``: ``s`` is ``--serial-fraction`` x ``T1`` if given (the share of the
    engine's dense work outside the tasks on a Dask cluster: the code step on the client and the
    forward pass, which runs layer after layer along the workers), else the Amdahl fit of 1 vs
    2 threads (``T2 = s + p / 2``). Both are scaled linearly in depth and in n (the products are
    ``n w^2``; the ``w^3`` solves, which do not grow with n, are counted as if they did: an upper
    bound). Communication: the bytes one block boundary moves per sweep, measured as the
    workers' bytes sent with 2 Dask workers minus with 1 (one boundary), scaled linearly in n
    and w; boundaries exchange at the same time, so the time is one boundary's bytes /
    bandwidth. Without Dask rows, 8 ``n x w`` float32 arrays per boundary are assumed.
    """
    with open(BENCH / a.speed_csv) as f:
        rows = {(r["scheme"], r["scheduler"], int(r["workers"]), int(r["blas_threads"])): r for r in csv.DictReader(f)}
    r1, r2 = rows[("consensus", "threads", 1, 1)], rows[("consensus", "threads", 2, 1)]
    L0, n0, w = int(r1["depth"]), int(r1["n"]), int(r1["width"])
    T1, T2 = float(r1["median_sweep_s"]), float(r2["median_sweep_s"])
    s0 = max(0.0, 2 * T2 - T1)
    p0 = T1 - s0
    print(f"measured ({a.speed_csv}: n={n0}, depth {L0} x {w}): consensus 1 thread {T1:.2f} s, "
          f"2 threads {T2:.2f} s per sweep")
    print(f"Amdahl split: serial {s0:.2f} s, parallel {p0:.2f} s; one substructure {p0 / L0:.3f} s")
    d1, d2 = rows.get(("consensus", "distributed", 1, 1)), rows.get(("consensus", "distributed", 2, 1))
    per_boundary = 8 * n0 * w * 4
    if d1 is not None and d2 is not None and d1.get("worker_bytes_per_sweep", "") not in ("", "nan"):
        b1, b2 = float(d1["worker_bytes_per_sweep"]), float(d2["worker_bytes_per_sweep"])
        per_boundary = b2 - b1
        print(f"Dask, neighbour placement: 1 worker {float(d1['median_sweep_s']):.2f} s, 2 workers "
              f"{float(d2['median_sweep_s']):.2f} s per sweep; workers sent {b1 / 1e9:.3f} / {b2 / 1e9:.3f} GB "
              f"per sweep -> one block boundary {per_boundary / 1e9:.3f} GB = "
              f"{per_boundary / (n0 * w * 4):.1f} n x w float32 arrays")
    boundary = per_boundary * (a.n / n0) * (a.width / w)
    scale = (a.depth / L0) * (a.n / n0) * (a.width / w) ** 2
    comm = boundary / (a.bandwidth * 1e9)
    splits = [("Amdahl fit of 1 vs 2 threads", s0, p0)]
    if a.serial_fraction is not None:
        splits.append((f"measured serial fraction {a.serial_fraction}", a.serial_fraction * T1,
                       (1 - a.serial_fraction) * T1))
    for name, sm, pm in splits:
        s, p = sm * scale, pm * scale
        print(f"\nprediction for n={a.n}, depth {a.depth} x {a.width}, serial part from the {name} "
              f"(linear in n, depth and width^2 from the measurement): serial {s:.1f} s, tasks "
              f"{p:.1f} s on one worker; {boundary / 1e9:.2f} GB per block boundary per sweep = {comm:.2f} s "
              f"at {a.bandwidth} GB/s")
        print("| workers | tasks s | communication s | serial s | predicted s per sweep |")
        print("|---|---|---|---|---|")
        for P in (1, 8, 64):
            c = comm if P > 1 else 0.0
            print(f"| {P} | {p / P:.1f} | {c:.2f} | {s:.1f} | {s + p / P + c:.1f} |")
        print(f"communication exceeds the tasks' time beyond P = {p / comm:.0f} workers; the serial part "
              f"({s:.1f} s) bounds the speed-up at {(s + p) / s if s > 0 else float('inf'):.1f}x unless it is "
              f"distributed too")


# ------------------------------------------------------------------------------------------ b. edges

def edges(a):
    rng = np.random.default_rng(0)
    n, d = a.n, 256
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    la0, _ = load()
    print(f"edges: consensus seconds per sweep (median of {a.sweeps}), n={n}, d={d}, serial; "
          f"load average at start {la0:.2f}", flush=True)
    grid = [(L, 256) for L in (4, 8, 16, 32)] + [(8, w) for w in (128, 512, 1024)]
    rows = []
    VDSH(32, depth=2, width=16, first_width=0, sweeps=1, scheme="consensus").fit(X[:50], y[:50])  # compile
    for L, w in grid:
        m = VDSH(32, depth=L, width=w, first_width=w, seed=0, sweeps=a.sweeps, scheme="consensus").fit(X, y)
        s = float(np.median([h["seconds"] for h in m.history_]))
        edges_ = d * w + (L - 1) * w * w + w * 32  # weights = edges of the network
        rows.append({"depth": L, "width": w, "n": n, "edges": edges_, "sweep_s": s, "load": os.getloadavg()[0]})
        print(f"  depth {L:3d} width {w:5d}: {s:.3f} s per sweep ({edges_} edges)", flush=True)
    write_csv(BENCH / "consensus_edges.csv", rows)
    dep = [r for r in rows if r["width"] == 256]
    wid = [r for r in rows if r["depth"] == 8]
    a1, b1, r1 = linfit([r["depth"] for r in dep], [r["sweep_s"] for r in dep])
    a2, b2, r2 = linfit([r["width"] ** 2 for r in wid], [r["sweep_s"] for r in wid])
    a3, b3, r3 = linfit([r["edges"] for r in rows], [r["sweep_s"] for r in rows])
    la1, busy = load()
    flag = "  [load above 0.5 per core: timings noisy]" if busy else ""
    print(f"vs depth (width 256): s = {a1:.4f} + {b1:.4f} * depth, R^2 = {r1:.4f}{flag}")
    print(f"vs width^2 (depth 8): s = {a2:.4f} + {b2:.3e} * width^2, R^2 = {r2:.4f}")
    print(f"vs edges (all):       s = {a3:.4f} + {b3:.3e} * edges, R^2 = {r3:.4f}")
    print(f"load average at end {la1:.2f}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for axi, pts, key, (aa, bb, rr), lab in ((ax[0], dep, "depth", (a1, b1, r1), "depth (width 256)"),
                                           (ax[1], wid, "width", (a2, b2, r2), "width^2 (depth 8)")):
        x = np.array([p[key] if key == "depth" else p[key] ** 2 for p in pts], float)
        axi.plot(x, [p["sweep_s"] for p in pts], "o")
        axi.plot(x, aa + bb * x, "-", label=f"linear fit, R^2 = {rr:.3f}")
        axi.set_xlabel(lab)
        axi.set_ylabel("seconds per consensus sweep")
        axi.legend()
    fig.suptitle(f"consensus sweep cost, n = {n}, serial (load {la0:.1f} -> {la1:.1f})")
    fig.tight_layout()
    fig.savefig(BENCH / "consensus_edges.png", dpi=100)


# ------------------------------------------------------------------------------------------ c. convergence

def conv_path(local, ext="csv"):
    """The convergence study's files: ``consensus_convergence`` (local: split, the default) or
    ``consensus_convergence_through``."""
    return STUDIES / f"consensus_convergence{'' if local == 'split' else '_' + local}.{ext}"
KEYS = ("objective", "code_fit", "label_loss", "primal_z", "primal_a", "consensus", "dtheta", "forward_gap")


def converge(a):
    CONV = conv_path(a.local)
    done = set()
    if CONV.exists():
        with open(CONV) as f:
            done = {(r["dataset"], int(r["depth"]), int(r["seed"])) for r in csv.DictReader(f)}
    for seed in a.seeds:
        for dataset in a.datasets:
            F = None
            for depth in a.depths:
                if (dataset, depth, seed) in done:
                    continue
                F = F if F is not None else features(dataset, seed)
                t0 = time.perf_counter()
                m = VDSH(a.bits, depth=depth, seed=seed, sweeps=a.sweeps, scheme="consensus", local=a.local)
                try:
                    m.fit(F["X_train"], F["y_train"])
                    status = "finite"
                except FloatingPointError as e:  # TrainingDiverged: recorded, not hidden
                    status = f"diverged: {e}"
                rows = [{"dataset": dataset, "depth": depth, "seed": seed, "bits": a.bits,
                         "iteration": h["iteration"], "seconds": h["seconds"], "status": status,
                         **{k: h.get(k, np.nan) for k in KEYS}} for h in m.history_]
                if not rows:
                    rows = [{"dataset": dataset, "depth": depth, "seed": seed, "bits": a.bits, "iteration": 0,
                             "seconds": 0.0, "status": status, **{k: np.nan for k in KEYS}}]
                write_csv(CONV, rows, append=True)
                print(f"{dataset} depth {depth} seed {seed}: {status}, {time.perf_counter() - t0:.0f} s, "
                      f"objective {rows[0]['objective']:.4g} -> {rows[-1]['objective']:.4g}; "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)


def plot(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(conv_path(a.local)) as f:
        rows = list(csv.DictReader(f))
    runs = {}
    for r in rows:
        runs.setdefault((r["dataset"], int(r["depth"]), int(r["seed"])), []).append(r)
    keys = ("objective", "primal_z", "primal_a", "consensus")
    datasets = sorted({k[0] for k in runs})
    fig, axes = plt.subplots(len(datasets), len(keys), figsize=(4 * len(keys), 3.2 * len(datasets)), squeeze=False)
    colours = {4: "C0", 16: "C1", 64: "C2"}
    lines = ["| dataset | depth | seed | finite | sweeps | objective start -> end | primal_z | primal_a | "
             "consensus | all end below start (consensus 0 -> 0 counts) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, depth, seed), rr in sorted(runs.items()):
        it = [int(r["iteration"]) for r in rr]
        vals = {k: np.array([float(r[k]) for r in rr]) for k in keys}
        finite = all(r["status"] == "finite" for r in rr) and all(np.isfinite(v).all() for v in vals.values())
        for j, k in enumerate(keys):
            axes[datasets.index(ds)][j].plot(it, vals[k], color=colours.get(depth, "k"), alpha=0.6,
                                             label=f"depth {depth}" if seed == 0 else None)
        below = [vals[k][-1] < vals[k][0] if vals[k][0] > 0 else vals[k][-1] <= vals[k][0] for k in keys]
        cells = " | ".join(f"{vals[k][0]:.4g} -> {vals[k][-1]:.4g}" for k in keys)
        lines.append(f"| {ds} | {depth} | {seed} | {finite} | {len(rr)} | {cells} | {all(below)} |")
    for i, ds in enumerate(datasets):
        for j, k in enumerate(keys):
            ax = axes[i][j]
            ax.set_title(f"{ds}: {k}")
            ax.set_xlabel("sweep")
            if k != "consensus":
                ax.set_yscale("log")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(conv_path(a.local, "png"), dpi=90)
    conv_path(a.local, "md").write_text(
        f"# Consensus scheme: convergence (bench/consensus.py converge --local {a.local}; plot --local {a.local})\n\n"
        f"32 bits, width 256 (first layer 1024), default train params, scheme consensus, local {a.local}, "
        "standard protocol training items (5,000); values of the first and last sweep.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


# ------------------------------------------------------------------------------------------ digits, GIL

def digits_table(a):
    """Sequential vs consensus variants on sklearn digits (depth 4 x 64, 16 bits): code fit at the
    first and last sweep and the mAP of 300 held-out queries against the 1,000 training codes."""
    from sklearn.datasets import load_digits
    from vdsh_numba.codes import pack_codes
    from vdsh_numba.search.metrics import mean_average_precision
    d = load_digits()
    X = d.data.astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    tr, te = slice(0, 1000), slice(1000, 1300)
    depth, width, bits, sweeps = 4, 64, 16, 20
    base = dict(depth=depth, width=width, seed=0, sweeps=sweeps, init="random", first_width=0, input_clip=0)
    print(f"digits, depth {depth} x {width}, {bits} bits, {sweeps} sweeps, load average {os.getloadavg()[0]:.2f}")
    print("| scheme | code fit sweep 1 -> last | consensus residual max | mAP |")
    print("|---|---|---|---|")
    for kw in ({"scheme": "sequential"}, {}, {"eta": 0.1}, {"eta": 0.0}, {"order": "aux_first"},
               {"local": "through", "resync": False, "eta": 0.1}, {"local": "through"}):
        m = VDSH(bits, **{**base, "scheme": "consensus", **kw}).fit(X[tr], d.target[tr])
        U = m._project(X)
        mAP = mean_average_precision(pack_codes(U[te]), pack_codes(U[tr]), d.target[te], d.target[tr])
        h = m.history_
        name = ", ".join(f"{k}={v}" for k, v in kw.items()) or "consensus defaults"
        cons = max(x["consensus"] for x in h) if "consensus" in h[0] else float("nan")
        print(f"| {name} | {h[0]['code_fit']:.2f} -> {h[-1]['code_fit']:.2f} | {cons:.2g} | {mAP:.3f} |", flush=True)


def gil_probe(a):
    """How much of each call leaves the GIL to another thread: a Python counting loop runs in a
    second thread while the call repeats in this one; its rate (millions of iterations per wall
    second) is high when the call releases the GIL (``sleep`` is the ceiling) and drops towards
    the pure-Python anchor when it holds it. Compare rates within one run only."""
    import threading
    import scipy.linalg as sla
    from threadpoolctl import threadpool_limits
    from vdsh_numba.methods.vdsh import consensus as cs
    rng = np.random.default_rng(0)
    M = rng.standard_normal((2000, 2000))
    M = M @ M.T + 2000 * np.eye(2000)
    A = np.abs(rng.standard_normal((2000, 256))).astype(np.float32)
    T = rng.standard_normal((2000, 256)).astype(np.float32)
    V, v = np.zeros((256, 256), np.float32), np.zeros(256, np.float32)
    spec = (A, T, None, 0.05, 0.005, V, v)
    prob = {"lo": spec, "hi": spec, "eta": 1e-3, "through": True, "residual_mid": False}
    cs.local_solve(prob)  # compile

    def probe(work, seconds=1.0):
        stop, count = [False], [0]

        def counter():
            c = 0
            while not stop[0]:
                c += 1
            count[0] = c
        th = threading.Thread(target=counter)
        th.start()
        t = time.perf_counter()
        while time.perf_counter() - t < seconds:
            work()
        w = time.perf_counter() - t
        stop[0] = True
        th.join()
        return count[0] / w / 1e6

    print(f"GIL probe, load average {os.getloadavg()[0]:.2f}: counting-thread rate while this thread runs ...")
    with threadpool_limits(limits=1):
        for name, f in [("time.sleep (ceiling)", lambda: time.sleep(0.05)),
                        ("pure Python (anchor)", lambda: sum(range(200_000))),
                        ("float32 GEMM 2000x256", lambda: A.T @ A),
                        ("scipy cho_factor 2000", lambda: sla.cho_factor(M, lower=True, check_finite=False)),
                        ("numpy solve 2000", lambda: np.linalg.solve(M, M[:, :256])),
                        ("consensus.local_solve", lambda: cs.local_solve(prob))]:
            print(f"  {name:24s} {probe(f):6.2f} M it/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--dataset", default="fashion_mnist", choices=sorted(DATA_DIRS))
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--sweeps", type=int, default=2)
    p.add_argument("--threads-only", action="store_true", help="no Dask: sequential on 1 and 2 cores, consensus on 1 and 2 threads")
    p.add_argument("--dask-only", action="store_true", help="no sequential rows: consensus on 1 and 2 threads and 1 and 2 Dask workers")
    p.add_argument("--no-threads", action="store_true", help="with --dask-only: the 1 and 2 Dask worker rows alone")
    p.add_argument("--first-width", type=int, default=None,
                   help="width of the first hidden layer (default: --width; the studies' default is 1024)")
    p.add_argument("--csv", default=None, help="file name under reports/bench/ (default: consensus_speed[_threads].csv)")
    p.set_defaults(fn=speed)
    p = sub.add_parser("edges")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--sweeps", type=int, default=2)
    p.set_defaults(fn=edges)
    p = sub.add_parser("converge")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    p.add_argument("--depths", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--sweeps", type=int, default=20)
    p.add_argument("--local", default="split", choices=["split", "through"])
    p.set_defaults(fn=converge)
    p = sub.add_parser("plot")
    p.add_argument("--local", default="split", choices=["split", "through"])
    p.set_defaults(fn=plot)
    p = sub.add_parser("model")
    p.add_argument("--speed-csv", default="consensus_speed_d64w1024.csv", help="a CSV of `speed` under reports/bench/")
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--depth", type=int, default=64)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--bandwidth", type=float, default=1.25, help="GB/s between neighbours (10 GbE)")
    p.add_argument("--serial-fraction", type=float, default=None,
                   help="the serial share of a 1-worker consensus sweep, measured (history dense_seconds / seconds)")
    p.set_defaults(fn=model)
    sub.add_parser("digits").set_defaults(fn=digits_table)
    sub.add_parser("gil").set_defaults(fn=gil_probe)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
