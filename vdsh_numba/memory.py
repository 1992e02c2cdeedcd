"""Peak-memory estimate of training, checked against what the machine (and its limits) allow.

The train stage calls :func:`check_training_memory` before fitting: a configuration that
would not fit is refused at once with what it needs, what is available and which parameters
to lower, instead of swapping or being killed hours later.
"""
from __future__ import annotations

import resource

__all__ = ["estimate_training_bytes", "available_bytes", "check_training_memory", "format_bytes"]


def estimate_training_bytes(method: str, n: int, d: int, depth: int, width: int, bits: int,
                            n_classes: int = 10, first_width=None) -> int:
    """Peak bytes that fitting ``method`` on ``n`` items of ``d`` features allocates.

    Notes
    -----
    ``vdsh`` (counted from :func:`vdsh_numba.vdsh.engine.train`; float32 unless said):
    per hidden layer and sample the auxiliary variables ``a``, ``z`` and the multipliers
    ``lam`` (``3 * depth`` arrays of ``n x width``), plus a second ``a``, ``z`` set while the
    forward pass re-synchronises them (``2 * depth``) and about 7 ``n x width`` work buffers
    (the BLAS products, right-hand sides and targets of one layer update); the features
    (float64 checked copy, float32 copy, clipped copy and the float64 transposes of the ridge
    initialisation: 28 bytes per value); codes, code targets and outputs (5 float64
    ``n x bits``), labels (2 float64 ``n x n_classes``); the weights and the float64 normal
    equations of one layer (6 matrices of ``max(width, d)^2``).

    With ``first_width`` (VDSH's wide first hidden layer; default ``TRAIN_DEFAULTS``) layer 1's
    arrays and the work buffers are ``n x first_width``.

    Other methods: a rough bound (4 float64 copies of the features and ``n x max(width, 1000)``
    float64 values: SDH's anchor features, the mini-batch networks' buffers).
    """
    n, d, L, w, k, c = (int(v) for v in (n, d, depth, width, bits, n_classes))
    if method == "vdsh":
        if first_width is None:
            from .vdsh import TRAIN_DEFAULTS
            first_width = TRAIN_DEFAULTS["first_width"]
        w1 = int(first_width) or w
        cols = w1 + max(L - 1, 0) * w                  # hidden units over all layers
        weights = 4 * (w1 * d + (w * w1 if L > 1 else 0) + max(L - 2, 0) * w * w + k * w)
        return (4 * n * (5 * cols + 7 * max(w1, w)) + 28 * n * d + 40 * n * k + 16 * n * c
                + weights + 48 * max(w1, w, d) ** 2)
    weights = 4 * (w * d + max(L - 1, 0) * w * w + k * w)
    return 32 * n * d + 8 * n * max(w, 1000) + weights


def _proc_kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_bytes():
    """``(bytes, sources)``: what this process may still allocate, and what limited it.

    The smallest of ``MemAvailable`` (``/proc/meminfo``), the address-space limit
    ``RLIMIT_AS`` (``ulimit -v``) less the current virtual size, ``RLIMIT_DATA`` less the
    current data size, and a cgroup v2 ``memory.max`` less ``memory.current``. ``bytes`` is
    ``None`` where none of them is known (no ``/proc``).
    """
    cands = []
    mem = _proc_kib("/proc/meminfo", "MemAvailable")
    if mem is not None:
        cands.append((mem, "MemAvailable"))
    for lim, key, name in ((resource.RLIMIT_AS, "VmSize", "RLIMIT_AS (ulimit -v)"),
                           (resource.RLIMIT_DATA, "VmData", "RLIMIT_DATA (ulimit -d)")):
        soft = resource.getrlimit(lim)[0]
        if soft != resource.RLIM_INFINITY:
            used = _proc_kib("/proc/self/status", key) or 0
            cands.append((max(soft - used, 0), name))
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            top = f.read().strip()
        if top != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                cands.append((max(int(top) - int(f.read()), 0), "cgroup memory.max"))
    except (OSError, ValueError):
        pass
    if not cands:
        return None, []
    best = min(v for v, _ in cands)
    return best, [name for v, name in cands if v == best]


def format_bytes(b) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def check_training_memory(method, n, d, depth, width, bits, n_classes=10, first_width=None) -> int:
    """Raise ``MemoryError`` when :func:`estimate_training_bytes` exceeds :func:`available_bytes`.

    Returns the estimate. The message says what is needed, what is available (and which limit
    says so) and which parameters to lower.
    """
    need = estimate_training_bytes(method, n, d, depth, width, bits, n_classes, first_width)
    avail, why = available_bytes()
    if avail is not None and need > avail:
        lower = ("width, depth or protocol.train_per_class (memory grows as n x depth x width "
                 "and depth x width^2)" if method == "vdsh" else
                 "protocol.train_per_class or the method's size parameters")
        raise MemoryError(
            f"training {method} at {bits} bits on {n} items x {d} features (depth {depth} x "
            f"width {width}) needs about {format_bytes(need)}, but only {format_bytes(avail)} "
            f"{'is' if avail < 2**30 else 'are'} available ({', '.join(why)}); lower {lower}")
    return need
