"""Seconds per consensus sweep (the network step, vdsh_numba.methods.vdsh.consensus.consensus_sweep) with a
pool of 1 vs 2 threads, and the sequential scheme's sweep on the same problem as an anchor.

    NUMBA_NUM_THREADS=1 python bench/consensus.py               # depth 16, width 256, n 2000
    NUMBA_NUM_THREADS=1 python bench/consensus.py --quick       # depth 4, width 64, n 500
    NUMBA_NUM_THREADS=1 python bench/consensus.py --digits      # the table of docs/algorithm.md §10.7
    NUMBA_NUM_THREADS=1 python bench/consensus.py --gil         # which calls release the GIL

Inputs are random (the cost does not depend on the data). Every executor starts from the same
state (a forward pass of the initial network, codes, zero duals) and runs ``--sweeps`` network
steps; the median seconds per step is printed, with the ratio 1 thread / 2 threads and the load
average (a ratio measured at a load above 0.5 per core is marked unreliable). The weights the
two pools end with are compared bitwise (same arithmetic, any placement). The anchor is one
sweep of the sequential trainer (vdsh_numba.VDSH, ``first_width = width``, BLAS and Numba
single-threaded), whose network step is the same amount of dense work done top-down.
"""
import argparse
import copy
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from vdsh_numba.methods.vdsh import consensus as cs  # noqa: E402
from vdsh_numba.methods.vdsh.executors import ThreadExecutor  # noqa: E402
from vdsh_numba.methods.vdsh import VDSH, forward  # noqa: E402


def start_state(n, d, depth, width, bits, seed, local):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 10, n)
    Y = np.eye(10)[y]
    o = {**cs.CONSENSUS_DEFAULTS, "local": local, "residual": False}  # plain net: every layer moves
    S, _, _ = cs.init_consensus(X, Y, depth, width, bits, seed, o)
    _, A, Z = forward(X, S["Ws"][:depth], S["bs"][:depth], S["Ws"][depth], S["bs"][depth], False, keep=True)
    S["A"], S["Z"] = A, Z
    return X, y, S


def time_sweeps(S0, executor, sweeps):
    S = copy.deepcopy(S0)
    secs = []
    for _ in range(sweeps):
        t = time.perf_counter()
        cs.consensus_sweep(S, executor)
        secs.append(time.perf_counter() - t)
    return float(np.median(secs)), S


def digits_table(sweeps=20):
    """Sequential vs consensus on sklearn digits (depth 4 x 64, 16 bits): code fit at the first
    and last sweep and the mAP of 300 held-out queries against the 1,000 training codes."""
    from sklearn.datasets import load_digits
    from vdsh_numba.codes import pack_codes
    from vdsh_numba.search.metrics import mean_average_precision
    d = load_digits()
    X = d.data.astype(np.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    tr, te = slice(0, 1000), slice(1000, 1300)
    Y = np.eye(10)[d.target[tr]]
    depth, width, bits = 4, 64, 16

    def mAP(U):
        return mean_average_precision(pack_codes(U[te]), pack_codes(U[tr]), d.target[te], d.target[tr])

    print(f"digits, depth {depth} x {width}, {bits} bits, {sweeps} sweeps, load average {os.getloadavg()[0]:.2f}")
    print("| scheme | code fit sweep 1 -> last | consensus residual max | mAP |")
    print("|---|---|---|---|")
    m = VDSH(bits, depth=depth, width=width, seed=0, sweeps=sweeps, init="random", first_width=0,
             input_clip=0).fit(X[tr], d.target[tr])
    h = m.history_
    print(f"| sequential | {h[0]['code_fit']:.2f} -> {h[-1]['code_fit']:.2f} | - | {mAP(m._project(X)):.3f} |")
    for kw in ({}, {"eta": 0.1}, {"eta": 0.0}, {"order": "aux_first"},
               {"local": "through", "resync": False, "eta": 0.1}, {"local": "through"}):
        S, _, h = cs.fit_consensus(X[tr], Y, depth, width, bits, seed=0, sweeps=sweeps, **kw)
        U = forward(X, S["Ws"][:depth], S["bs"][:depth], S["Ws"][depth], S["bs"][depth], True)
        name = "consensus " + (", ".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
        print(f"| {name} | {h[0]['code_fit']:.2f} -> {h[-1]['code_fit']:.2f} | "
              f"{max(x['consensus'] for x in h):.2g} | {mAP(U):.3f} |", flush=True)


def gil_probe():
    """How much of each call leaves the GIL to another thread: a Python counting loop runs in a
    second thread while the call repeats in this one; its rate (millions of iterations per wall
    second) is high when the call releases the GIL (``sleep`` is the ceiling) and drops towards
    the pure-Python anchor when it holds it. Compare rates within one run only."""
    import threading
    import scipy.linalg as sla
    from threadpoolctl import threadpool_limits
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
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweeps", type=int, default=3)
    ap.add_argument("--local", default="split", choices=["split", "through"])
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--gil", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="also time the network step with ops=gpu_consensus")
    a = ap.parse_args()
    if a.digits:
        digits_table()
        return
    if a.gil:
        gil_probe()
        return
    n, d, depth, width = (500, 64, 4, 64) if a.quick else (2000, 256, 16, 256)
    bits = 32
    load0 = os.getloadavg()[0]
    print(f"consensus sweep: n={n} d={d} depth={depth} width={width} local={a.local}; "
          f"load average at start {load0:.2f} on {os.cpu_count()} cores", flush=True)
    X, y, S0 = start_state(n, d, depth, width, bits, 0, a.local)
    ex1, ex2 = ThreadExecutor(1), ThreadExecutor(2)
    try:
        time_sweeps(S0, ex1, 1)  # compile the Numba kernels
        t1, S1 = time_sweeps(S0, ex1, a.sweeps)
        t2, S2 = time_sweeps(S0, ex2, a.sweeps)
    finally:
        ex1.close()
        ex2.close()
    same = all(np.array_equal(p, q) for p, q in zip(S1["Ws"] + S1["bs"], S2["Ws"] + S2["bs"]))
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        m = VDSH(bits, depth=depth, width=width, seed=0, sweeps=a.sweeps + 1, first_width=width,
                 residual=False, init="random").fit(X, y)
    seq = float(np.median([h["seconds"] for h in m.history_[1:]]))
    load1 = os.getloadavg()[0]
    per_core = max(load0, load1) / (os.cpu_count() or 1)
    print(f"1 thread : {t1:.3f} s per network step (median of {a.sweeps})")
    print(f"2 threads: {t2:.3f} s per network step")
    print(f"ratio 1 thread / 2 threads = {t1 / t2:.2f}" + ("  [unreliable: load above 0.5 per core]"
                                                           if per_core > 0.5 else ""))
    print(f"anchor: sequential sweep (whole sweep, 1 thread) {seq:.3f} s; consensus 1 thread / sequential "
          f"= {t1 / seq:.2f}")
    print(f"weights bitwise equal (1 vs 2 threads): {same}")
    if a.gpu:
        from numba import cuda
        from vdsh_numba.methods.vdsh import gpu_consensus
        from vdsh_numba.methods.vdsh.executors import SerialExecutor
        G = copy.deepcopy(S0)
        G["A"] = [cuda.to_device(x) for x in S0["A"]]
        G["Z"] = [None] + [cuda.to_device(x) for x in S0["Z"][1:]]
        G["Lam"] = [cuda.to_device(x) for x in S0["Lam"]]
        G["B"] = cuda.to_device(S0["B"])
        secs = []
        for _ in range(a.sweeps + 1):
            t = time.perf_counter()
            cs.consensus_sweep(G, SerialExecutor(), ops=gpu_consensus)
            cuda.synchronize()
            secs.append(time.perf_counter() - t)
        tg = float(np.median(secs[1:]))
        err = max(float(np.abs(p - q).max()) for p, q in zip(S1["Ws"], G["Ws"]))
        print(f"GPU: {tg:.3f} s per network step; 1 CPU thread / GPU = {t1 / tg:.2f}; "
              f"max |W_gpu - W_cpu| = {err:.2e}")
    print(f"load average at end {load1:.2f}")


if __name__ == "__main__":
    main()
