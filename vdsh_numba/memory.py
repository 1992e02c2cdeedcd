"""Peak-memory estimate of training, checked against what the machine (and its limits) allow.

The train stage calls :func:`check_training_memory` before fitting: a configuration that
would not fit is refused at once with what it needs, what is available and which parameters
to lower, instead of swapping or being killed hours later.
"""
from __future__ import annotations

import resource

__all__ = ["available_bytes", "check_training_memory", "format_bytes"]


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


def check_training_memory(model, n, d, n_classes=10) -> int:
    """Raise ``MemoryError`` when ``model.training_bytes(n, d, n_classes)`` (each method's own
    estimate, :class:`vdsh_numba.methods.base.HashingModel`) exceeds :func:`available_bytes`.

    Returns the estimate. The message says what is needed, what is available (and which limit
    says so) and which parameters to lower (``model.memory_advice``).
    """
    need = model.training_bytes(n, d, n_classes)
    avail, why = available_bytes()
    if avail is not None and need > avail:
        depth, width = getattr(model, "depth", "-"), getattr(model, "width", "-")
        raise MemoryError(
            f"training {model.method_name} at {model.bits} bits on {n} items x {d} features (depth "
            f"{depth} x width {width}) needs about {format_bytes(need)}, but only "
            f"{format_bytes(avail)} {'is' if avail < 2**30 else 'are'} available ({', '.join(why)}); "
            f"lower {model.memory_advice}")
    return need
