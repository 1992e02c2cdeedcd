"""The VDSH training engine: one sweep loop for every backend.

:func:`train` runs VDSH's layer-wise ADMM (``docs/algorithm.md`` section 4) with the array
operations of a backend module ``ops`` -- :mod:`vdsh_numba.methods.vdsh.cpu_ops` (numpy/BLAS and the
``@njit`` kernels of :mod:`vdsh_numba.methods.vdsh.admm`) or :mod:`vdsh_numba.methods.vdsh.cuda_ops` (cuBLAS or the
``numba.cuda`` GEMM and the kernels of :mod:`vdsh_numba.methods.vdsh.gpu_admm`), twin modules with the same
functions. Everything else exists once, here: the update order, the penalty schedule,
checkpoint/resume, the divergence guard, the final refit, the wide first layer, the history rows.

Where things live
-----------------
Host (numpy): the weights ``Ws``, ``bs``, ``Wo``, ``bo``, the classifier ``G``, every ``w x w``
system and its float64 factorisation (:mod:`vdsh_numba.methods.vdsh.solves`). Device (the backend's
arrays; numpy arrays on the CPU): the features, labels, codes ``B``, every layer's auxiliary
``a_h``, ``z_h`` and multipliers ``Lam_h``, the outputs ``U`` and the work buffers. Weights are
copied to the device at the start of every sweep and after every update (``w x w`` each).

The update order is one function, :func:`layerwise_sweep` (forward re-synchronisation, code
step, classifier, output layer, hidden layers top-down). :func:`train` takes it as ``update``:
another update order is another function with the same signature, and it inherits every
feature of the loop. The consensus scheme
(:func:`vdsh_numba.methods.vdsh.consensus.consensus_update`) is the second one: it shares
:func:`codes_step` (steps 1-2) and :func:`sweep_terms` (the history row) with
:func:`layerwise_sweep` and keeps its own state (local copies, duals, its penalty) in
``S["extra"]`` (name -> host array) and ``S["extra_meta"]`` (JSON-able), which checkpoints
save and resumes restore.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from .checkpoint import load_checkpoint, save_checkpoint
from .solves import classifier, initial_parameters, label_loss, objective_terms, ridge_from_moments, sym_inverse

__all__ = ["TrainingDiverged", "DenseTimer", "Workspace", "Run", "residual_flags", "forward", "ridge",
           "project", "resync_forward", "codes_step", "sweep_terms", "layerwise_sweep", "train", "TrainResult"]


class TrainingDiverged(FloatingPointError):
    """A training variable or the objective became NaN/Inf.

    ``sweep`` (1-based) and ``layer`` (1-based hidden layer, ``"output"``, ``"codes"``, ``"forward"``
    or ``"objective"``) say where; ``checkpoint`` is the path of the last finite checkpoint
    (``None`` without checkpointing), which is never overwritten by non-finite state.
    """

    def __init__(self, sweep, layer, what, checkpoint=None):
        self.sweep, self.layer, self.what, self.checkpoint = sweep, layer, what, checkpoint
        where = f"hidden layer {layer}" if isinstance(layer, (int, np.integer)) else str(layer)
        msg = f"VDSH training diverged at sweep {sweep}, {where}: {what} is not finite"
        if checkpoint is not None:
            msg += f" (last finite checkpoint kept at {checkpoint})"
        super().__init__(msg)


class DenseTimer:
    """Calls ``f(*args)`` and adds its seconds (after ``ops.synchronize()``) to ``seconds``:
    the time of the dense work (products over the samples, host factorisations)."""

    def __init__(self, ops):
        self.ops = ops
        self.seconds = 0.0

    def __call__(self, f, *args, **kw):
        t = time.perf_counter()
        r = f(*args, **kw)
        self.ops.synchronize()
        self.seconds += time.perf_counter() - t
        return r


class Workspace:
    """Work buffers of the backend, one per (name, shape, dtype), allocated on first use."""

    def __init__(self, ops):
        self.ops = ops
        self.buffers = {}

    def get(self, name, rows, cols, dtype=np.float32):
        key = (name, int(rows), int(cols), np.dtype(dtype).str)
        if key not in self.buffers:
            self.buffers[key] = self.ops.empty((int(rows), int(cols)), dtype)
        return self.buffers[key]


def residual_flags(residual, Ws):
    """Which hidden layers have an identity skip: residual net, not the first layer, square W."""
    return [bool(residual and h > 0 and W.shape[0] == W.shape[1]) for h, W in enumerate(Ws)]


def _plain(f, *args, **kw):
    return f(*args, **kw)


def forward(ops, X, Wd, bd, Wod, bod, flags, A, Z, U, dense=_plain):
    """Forward pass into the device buffers ``A[1..L]``, ``Z[1..L]`` and ``U`` (``A[0]`` is ``X``).

    ``z_h = a_{h-1} W_h^T + b_h``, ``a_h = relu(z_h) (+ a_{h-1} where flags[h-1])``,
    ``U = a_L W_o^T + b_o``; ``Z[h]`` also holds the product (``bias_act`` is elementwise),
    and ``A[h]`` may be ``A[h-1]`` (in place). Returns ``U``.
    """
    a = X
    for h in range(len(Wd)):
        dense(ops.gemm, a, Wd[h], Z[h + 1], False, True)
        ops.bias_act(Z[h + 1], bd[h], a, flags[h], Z[h + 1], A[h + 1])
        a = A[h + 1]
    dense(ops.gemm, a, Wod, U, False, True)
    ops.add_bias(U, bod, U)
    return U


def ridge(ops, T, A, beta, rho, prox, W_old, dense=_plain):
    """``argmin_{W,b} beta/n ||T - A W^T - 1 b^T||^2 + rho ||W||^2 + prox ||W - W_old||^2``.

    ``T``, ``A`` device arrays; the moments come from the backend, the solve is
    :func:`~vdsh_numba.methods.vdsh.solves.ridge_from_moments` on the host. Returns host ``(W, b)``.
    """
    moments = dense(ops.ridge_moments, T, A)
    return dense(ridge_from_moments, *moments, A.shape[0], beta, rho, prox, W_old)


def project(ops, X, Ws, bs, Wo, bo, residual):
    """Network outputs ``U`` (host float32, ``(n, bits)``) of host float32 features ``X``.

    Rows go in batches of ``ops.batch_rows()`` (0: all at once); two buffers per layer width
    serve every depth (the forward pass may work in place).
    """
    n = X.shape[0]
    flags = residual_flags(residual, Ws)
    Wd, bd = [ops.to_device(W) for W in Ws], [ops.to_device(b) for b in bs]
    Wod, bod = ops.to_device(Wo), ops.to_device(bo)
    out = np.empty((n, Wo.shape[0]), np.float32)
    step = ops.batch_rows() or max(n, 1)
    ws = Workspace(ops)  # one set of buffers per batch size
    for s in range(0, n, step):
        e = min(n, s + step)
        A = [ops.to_device(X[s:e])] + [ws.get("a", e - s, W.shape[0]) for W in Ws]
        Z = [None] + [ws.get("z", e - s, W.shape[0]) for W in Ws]
        U = ws.get("u", e - s, Wo.shape[0])
        forward(ops, A[0], Wd, bd, Wod, bod, flags, A, Z, U)
        out[s:e] = ops.to_host(U)
    return out


class Run:
    """What stays fixed during a fit: the backend, the data on the device, the buffers."""

    def __init__(self, ops, X, Y, depth, bits, o, dense):
        self.ops, self.o, self.dense = ops, o, dense
        self.n, self.L, self.k = X.shape[0], depth, bits
        self.X = ops.to_device(X)
        self.Y = ops.to_device(Y, np.float64)
        self.Yf = ops.to_device(Y)
        self.sumY2 = float((Y ** 2).sum())
        self.Bf = ops.empty((self.n, bits))
        self.U = ops.empty((self.n, bits))
        self.ws = Workspace(ops)
        self.checkpoint = None
        self.zero = {}
        #: a host copy of a training array wherever it lives (``ops.to_host``; an update order
        #: that keeps arrays on other machines sets its own, e.g. the consensus scheme on Dask)
        self.fetch = ops.to_host

    def zeros(self, width, rows=None):
        """A device ``(n, width)`` (or ``(width,)`` with ``rows=0``) array of zeros, never written."""
        key = (width, self.n if rows is None else rows)
        if key not in self.zero:
            self.zero[key] = self.ops.zeros((key[1], width) if key[1] else (width,))
        return self.zero[key]

    def layer_buffers(self, widths):
        """A fresh ``[X, a_1..a_L]`` / ``[None, z_1..z_L]`` pair of buffer lists."""
        return ([self.X] + [self.ops.empty((self.n, w)) for w in widths],
                [None] + [self.ops.empty((self.n, w)) for w in widths])

    def diverged(self, it, layer, what):
        ck = self.checkpoint
        return TrainingDiverged(it + 1, layer, what, ck if ck is not None and os.path.exists(ck) else None)


def resync_forward(run, S, it, Wd, bd, flags):
    """Step 1 of a sweep: the forward pass into the spare buffers ``S["Af"]``, ``S["Zf"]`` and
    ``run.U``; the auxiliary variables are re-synchronised with it (``o["resync"]``, or the
    first sweep: the buffer lists swap). Returns ``(U, gap)``, ``gap`` the forward gap
    ``||a_L - a_L^fwd|| / ||a_L^fwd||`` (NaN on the first sweep)."""
    ops, o, L = run.ops, run.o, run.L
    Af, Zf, U = S["Af"], S["Zf"], run.U
    run.dense(forward, ops, run.X, Wd, bd, ops.to_device(S["Wo"]), ops.to_device(S["bo"]), flags, Af, Zf, U)
    if not ops.all_finite(U):
        bad = next((h for h in range(1, L + 1) if not ops.all_finite(Af[h])), "output")
        raise run.diverged(it, bad, "the forward pass")
    gap = np.nan
    if S["aux"]:
        gap = float(np.sqrt(ops.sq_dist(S["A"][L], Af[L]) / max(ops.sq_dist(Af[L], run.zeros(Af[L].shape[1])), 1e-30)))
    if not S["aux"] or o["resync"]:
        S["A"], S["Af"], S["Z"], S["Zf"] = Af, S["A"], Zf, S["Z"]
        S["aux"] = True
    return U, gap


def codes_step(run, S, it, resync=None):
    """Steps 1 and 2 of every sweep, whatever the update order of the network.

    1. forward pass, auxiliary variables re-synchronised with it: ``resync(run, S, it, Wd, bd,
    flags) -> (U, gap)``, by default :func:`resync_forward` (an update order whose tasks run
    elsewhere brings its own: :func:`vdsh_numba.methods.vdsh.consensus.executor_resync`);
    2. code step (DCC) and classifier ``G`` (``S["B"]``, ``S["G"]`` and ``run.Bf``, the
    float32 codes, updated). Returns what the network step and :func:`sweep_terms` need:
    ``Wd``, ``bd`` (device weights), ``flags`` (:func:`residual_flags`), ``U`` (the outputs of the
    forward pass), ``gap`` (the forward gap), ``flips``, ``BtB``, ``BtY``.
    """
    ops, o, dense, n, k = run.ops, run.o, run.dense, run.n, run.k
    Ws, bs = S["Ws"], S["bs"]
    flags = residual_flags(o["residual"], Ws)
    Wd, bd = [ops.to_device(W) for W in Ws], [ops.to_device(b) for b in bs]
    # 1. re-synchronise the auxiliary variables with the forward pass
    U, gap = (resync or resync_forward)(run, S, it, Wd, bd, flags)
    # 2. code step (discrete) and classifier step
    G = S["G"]
    Q = run.ws.get("Q", n, k, np.float64)
    ops.codes_rhs(run.Y, ops.to_device(G, np.float64), U, o["nu"], Q)
    flips = ops.dcc_codes(S["B"], Q, ops.to_device(G @ G.T, np.float64), int(o["dcc_passes"]))
    Bf = run.Bf
    ops.cast(S["B"], Bf)
    BtB, BtY = dense(ops.code_moments, Bf, run.Yf)
    G = S["G"] = classifier(BtB, BtY, n, o["lam_G"])
    if not np.isfinite(G).all():
        raise run.diverged(it, "codes", "the classifier G")
    return {"Wd": Wd, "bd": bd, "flags": flags, "U": U, "gap": gap, "flips": flips, "BtB": BtB, "BtY": BtY}


def sweep_terms(run, S, ctx, rz, ra):
    """The history terms of a sweep: the objective (docs/algorithm.md section 2) at the forward
    pass of the sweep's start and the new weights, and the primal residuals from ``rz``, ``ra``
    (per hidden layer: squared residuals of the z and of the activation constraints, summed
    over the samples). ``ctx``: what :func:`codes_step` returned."""
    ops, o, n, k = run.ops, run.o, run.n, run.k
    beta, gamma = S["beta"], S["gamma"]
    U = ctx["U"]
    code_fit = ops.sq_dist(S["B"], U) / n
    regW = float(sum((W.astype(np.float64) ** 2).sum() for W in S["Ws"]) + (S["Wo"].astype(np.float64) ** 2).sum())
    terms = objective_terms(o, label_loss(run.sumY2, S["G"], ctx["BtB"], ctx["BtY"], n), S["G"], code_fit, regW)
    return {**terms,
            "penalty_z": float(beta * rz.sum() / n), "penalty_a": float(gamma * ra.sum() / n),
            "primal_z": float(np.sqrt(rz.sum() / n)), "primal_a": float(np.sqrt(ra.sum() / n)),
            "primal_z_layers": (np.sqrt(rz / n)).tolist(), "primal_a_layers": (np.sqrt(ra / n)).tolist(),
            "forward_gap": ctx["gap"], "bit_agreement": ops.sign_agreement(U, S["B"]) / (n * k),
            "bit_flips": int(ctx["flips"])}


def layerwise_sweep(run, S, it):
    """One sweep of VDSH's layer-wise ADMM (``docs/algorithm.md`` section 4) on state ``S``.

    1. forward pass, auxiliary variables re-synchronised with it; 2. code step (DCC) and
    classifier (both :func:`codes_step`); 3. output layer, then every hidden layer top-down:
    ``a_h``, ``z_h``, ``W_h, b_h``, ``Lam_h``. Updates ``S`` in place and returns the history
    terms of the sweep (:func:`sweep_terms`).
    """
    ops, o, dense, n, L, k = run.ops, run.o, run.dense, run.n, run.L, run.k
    Ws, bs, Lam = S["Ws"], S["bs"], S["Lam"]
    beta, gamma = S["beta"], S["gamma"]
    ctx = codes_step(run, S, it)
    Wd, bd, flags = ctx["Wd"], ctx["bd"], ctx["flags"]
    A, Z, Bf = S["A"], S["Z"], run.Bf
    # 3. network: output layer, then hidden layers top-down
    Wo, bo = S["Wo"], S["bo"] = ridge(ops, Bf, A[L], 1.0, o["rho"], o["prox"], S["Wo"], dense)
    if not (np.isfinite(Wo).all() and np.isfinite(bo).all()):
        raise run.diverged(it, "output", "the output layer W_o, b_o")
    Wod = ops.to_device(Wo)
    rz, ra = np.zeros(L), np.zeros(L)
    for h in range(L, 0, -1):  # layer h: Ws[h-1], A[h], Z[h], Lam[h-1]
        li = h - 1
        wh = Ws[li].shape[0]
        P, RHS = run.ws.get("P", n, wh), run.ws.get("RHS", n, wh)
        if h == L:  # target: the codes through the output layer
            Sk = run.ws.get("Sk", n, k)
            ops.add_bias(Bf, ops.to_device(-bo), Sk)
            q = dense(ops.gemm, Sk, Wod, P)
            M = (Wo.T @ Wo).astype(np.float64)
            coef_q, skip = 1.0, 0.0
            a_next = z_next = A[h]  # unused
        else:  # target: the layer above's z (shifted by its multiplier and bias)
            St = run.ws.get("S", n, Ws[h].shape[0])
            ops.shift_target(Z[h + 1], Lam[h], bd[h], St)
            q = dense(ops.gemm, St, Wd[h], P)
            M = beta * dense(np.dot, Ws[h].T, Ws[h]).astype(np.float64)
            coef_q, skip = beta, (o["skip_weight"] * gamma if flags[h] else 0.0)
            a_next, z_next = A[h + 1], Z[h + 1]
        ops.a_rhs(q, coef_q, a_next, z_next, skip, A[h - 1], Z[h], gamma, flags[li], RHS)
        M[np.diag_indices_from(M)] += gamma + skip
        if not np.isfinite(M).all():
            raise run.diverged(it, h, "the a-step system")
        dense(ops.gemm, RHS, ops.to_device(dense(sym_inverse, M)), A[h])
        p = dense(ops.gemm, A[h - 1], Wd[li], P, False, True)
        ops.z_update(A[h], A[h - 1], p, bd[li], Lam[li], beta, gamma, flags[li], Z[h])
        T = run.ws.get("T", n, wh)
        ops.shift_target(Z[h], Lam[li], run.zeros(wh, rows=0), T)  # T = z_h + Lam_h
        Ws[li], bs[li] = ridge(ops, T, A[h - 1], 1.0, o["rho"] / beta, o["prox"] / beta, Ws[li], dense)
        Wd[li], bd[li] = ops.to_device(Ws[li]), ops.to_device(bs[li])
        p = dense(ops.gemm, A[h - 1], Wd[li], P, False, True)
        lam = Lam[li] if o["multipliers"] else run.ws.get("no_multipliers", n, wh)
        if not o["multipliers"]:
            ops.cast(run.zeros(wh), lam)
        rz[li] = ops.dual_update(lam, Z[h], p, bd[li])
        ra[li] = ops.a_residual(A[h], A[h - 1], Z[h], flags[li])
        # the residual sums cover a_h, z_h, W_h, b_h and Lam_h: one check per layer
        if not (np.isfinite(rz[li]) and np.isfinite(ra[li]) and np.isfinite(Ws[li]).all()
                and np.isfinite(bs[li]).all()):
            raise run.diverged(it, h, "a_h, z_h, W_h, b_h or the multipliers")
    return sweep_terms(run, S, ctx, rz, ra)


class TrainResult:
    """What :func:`train` returns: host ``Ws``, ``bs``, ``Wo``, ``bo``, ``G``, ``B`` and the
    sweep it resumed from (0: a fresh start)."""

    def __init__(self, Ws, bs, Wo, bo, G, B, resumed_from):
        self.Ws, self.bs, self.Wo, self.bo, self.G, self.B = Ws, bs, Wo, bo, G, B
        self.resumed_from = resumed_from


def _start(run, X, Y, depth, width, seed):
    """The state before the first sweep (gradient-free initialisation, docs/algorithm.md section 5)."""
    ops, o, k = run.ops, run.o, run.k
    rng = np.random.default_rng(seed)
    Ws, bs, B = initial_parameters(X, Y, depth, width, k, o, rng)
    G = classifier(B.T @ B, B.T @ Y, X.shape[0], o["lam_G"])
    S = {"Ws": Ws, "bs": bs, "B": ops.to_device(B, np.float64), "G": G, "rng": rng,
         "Lam": [ops.zeros((run.n, W.shape[0])) for W in Ws],
         "beta": o["beta"], "gamma": o["gamma"], "sweep": 0, "elapsed": 0.0, "extra": {}, "extra_meta": {}}
    _buffers(run, S)
    wt = Ws[-1].shape[0]
    forward(ops, run.X, [ops.to_device(W) for W in Ws], [ops.to_device(b) for b in bs],
            ops.zeros((k, wt)), ops.zeros((k,)), residual_flags(o["residual"], Ws), S["Af"], S["Zf"], run.U)
    ops.cast(S["B"], run.Bf)
    S["Wo"], S["bo"] = ridge(ops, run.Bf, S["Af"][depth], 1.0, o["rho"], 0.0, np.zeros((k, wt)))
    return S


def _buffers(run, S):
    widths = [W.shape[0] for W in S["Ws"]]
    S["A"], S["Z"] = run.layer_buffers(widths)
    S["Af"], S["Zf"] = run.layer_buffers(widths)
    S["aux"] = False


def _resume(run, arrays, meta, depth, seed):
    """The state saved in a checkpoint, on the device."""
    ops, L = run.ops, depth
    S = {"Ws": [arrays[f"W_{h}"] for h in range(L)], "bs": [arrays[f"b_{h}"] for h in range(L)],
         "Wo": arrays["Wo"], "bo": arrays["bo"], "G": arrays["G"],
         "B": ops.to_device(arrays["B"], np.float64),
         "Lam": [ops.to_device(arrays[f"Lam_{h}"]) for h in range(L)],
         "sweep": int(meta["sweep"]), "beta": float(meta["beta"]), "gamma": float(meta["gamma"]),
         "elapsed": float(meta["elapsed"]),
         "extra": {k[len("extra_"):]: v for k, v in arrays.items() if k.startswith("extra_")},
         "extra_meta": meta.get("extra", {})}
    _buffers(run, S)
    if f"A_{L}" in arrays:
        for h in range(1, L + 1):
            if f"A_{h}" in arrays:
                S["A"][h] = ops.to_device(arrays[f"A_{h}"])
            if f"Z_{h}" in arrays:
                S["Z"][h] = ops.to_device(arrays[f"Z_{h}"])
        S["aux"] = True
    rng = np.random.default_rng(seed)
    rng.bit_generator.state = meta["rng"]
    S["rng"] = rng
    return S


def _save(run, path, S, history, fp):
    ops, L = run.ops, run.L
    arrays = {"B": ops.to_host(S["B"]), "G": S["G"], "Wo": S["Wo"], "bo": S["bo"]}
    for h in range(L):
        arrays[f"W_{h}"], arrays[f"b_{h}"] = S["Ws"][h], S["bs"][h]
        arrays[f"Lam_{h}"] = run.fetch(S["Lam"][h])
    if S["aux"]:
        # with resync only the top layer's auxiliary output survives a sweep (the forward gap)
        for h in ([L] if run.o["resync"] else range(1, L + 1)):
            arrays[f"A_{h}"] = run.fetch(S["A"][h])
            if not run.o["resync"]:
                arrays[f"Z_{h}"] = run.fetch(S["Z"][h])
    for name, x in S["extra"].items():  # an update order's own state (host arrays, or held elsewhere)
        arrays[f"extra_{name}"] = x if isinstance(x, np.ndarray) else run.fetch(x)
    meta = {"sweep": S["sweep"], "beta": S["beta"], "gamma": S["gamma"], "fingerprint": fp, "extra": S["extra_meta"],
            "rng": S["rng"].bit_generator.state, "history": history, "elapsed": S["elapsed"]}
    save_checkpoint(path, arrays, meta)


def train(ops, X, Y, *, depth, width, bits, seed, o, history, checkpoint_path=None, fingerprint=None,
          progress=False, on_sweep=None, update=layerwise_sweep):
    """Train VDSH with backend ``ops``; returns a :class:`TrainResult` (host arrays).

    Parameters
    ----------
    ops : module
        :mod:`vdsh_numba.methods.vdsh.cpu_ops` or :mod:`vdsh_numba.methods.vdsh.cuda_ops`.
    X : ndarray float32 (n, d)
        Training features, already clipped, C-contiguous (host).
    Y : ndarray float64 (n, C)
        Label matrix (:func:`vdsh_numba.methods.base.label_matrix`).
    depth, width, bits, seed : int
        The network and the seed of every random choice.
    o : dict
        The training parameters (``vdsh_numba.methods.vdsh.TRAIN_DEFAULTS`` keys).
    history : list
        Receives one dict per sweep (replaced by the checkpoint's rows on a resume).
    checkpoint_path, fingerprint : optional
        With ``o["checkpoint_every"] = N > 0`` the loop state is saved to ``checkpoint_path``
        every N sweeps and after the last; an existing file with the same ``fingerprint``
        (:func:`vdsh_numba.methods.vdsh.checkpoint.fingerprint`) is resumed from.
    on_sweep : callable(it, Ws, bs, Wo, bo, G), optional
        Called after every sweep (after its checkpoint); may modify the host weights.
    update : callable(run, S, it) -> dict
        The update order of one sweep (:func:`layerwise_sweep`).
    """
    dense = DenseTimer(ops)
    run = Run(ops, X, Y, depth, bits, o, dense)
    run.checkpoint = None if checkpoint_path is None else os.fspath(checkpoint_path)
    ck_every = int(o["checkpoint_every"])
    if run.checkpoint is not None and os.path.exists(run.checkpoint):
        arrays, meta = load_checkpoint(run.checkpoint, fingerprint)
        S = _resume(run, arrays, meta, depth, seed)
        history[:] = meta["history"]
    else:
        S = _start(run, X, Y, depth, width, seed)
    resumed_from = S["sweep"]
    t_start = time.perf_counter() - S["elapsed"]
    n_sweeps = int(o["sweeps"])
    sweeps = range(S["sweep"], n_sweeps)
    if progress:
        from tqdm import tqdm
        sweeps = tqdm(sweeps, desc=f"VDSH {depth}x{width} {bits} bits ({ops.NAME})", file=sys.stderr,
                      initial=S["sweep"], total=n_sweeps)
    for it in sweeps:
        t0 = time.perf_counter()
        dense.seconds = 0.0
        terms = update(run, S, it)
        ops.synchronize()
        secs = time.perf_counter() - t0
        if not np.isfinite(terms["objective"]):
            raise run.diverged(it, "objective", "the objective")
        history.append({"iteration": it + 1, "seconds": secs, "dense_seconds": dense.seconds,
                        "elapsed": time.perf_counter() - t_start, **terms,
                        "beta": S["beta"], "gamma": S["gamma"]})
        # the penalty schedule: geometric growth up to penalty_max times the start
        growth = o["penalty_growth"]
        S["beta"] = min(S["beta"] * growth, o["beta"] * o["penalty_max"])
        S["gamma"] = min(S["gamma"] * growth, o["gamma"] * o["penalty_max"])
        S["sweep"] = it + 1
        if run.checkpoint is not None and ck_every > 0 and ((it + 1) % ck_every == 0 or it + 1 == n_sweeps):
            S["elapsed"] = time.perf_counter() - t_start
            _save(run, run.checkpoint, S, history, fingerprint)
        if on_sweep is not None:
            on_sweep(it, S["Ws"], S["bs"], S["Wo"], S["bo"], S["G"])
    if o["final_refit"] and n_sweeps > 0:
        # the last sweep moved the hidden layers after W_o was fitted: refit it on the forward pass
        Ws, bs = S["Ws"], S["bs"]
        forward(ops, run.X, [ops.to_device(W) for W in Ws], [ops.to_device(b) for b in bs],
                ops.to_device(S["Wo"]), ops.to_device(S["bo"]), residual_flags(o["residual"], Ws),
                S["Af"], S["Zf"], run.U)
        ops.cast(S["B"], run.Bf)
        S["Wo"], S["bo"] = ridge(ops, run.Bf, S["Af"][depth], 1.0, o["rho"], 0.0, S["Wo"])
        if not (np.isfinite(S["Wo"]).all() and np.isfinite(S["bo"]).all()):
            raise run.diverged(n_sweeps - 1, "output", "the final refit of W_o, b_o")
    return TrainResult(S["Ws"], S["bs"], S["Wo"], S["bo"], S["G"], ops.to_host(S["B"]), resumed_from)
