"""Where independent training tasks run: serially, on a pool of threads, or on a Dask cluster.

An executor has one method, ``map(fn, arg_tuples) -> list`` (results in the order of
``arg_tuples``), and runs every task with single-threaded BLAS, so a task's arithmetic does not
depend on where it runs: the same tasks give bitwise-equal results on any executor
(``tests/test_consensus.py``). ``fn`` must be a module-level function (Dask pickles it by name)
that does not modify its arguments (a Dask worker gets copies; a thread does not).

Used by :mod:`vdsh_numba.methods.vdsh.consensus` (the local problems of the consensus scheme).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["SerialExecutor", "ThreadExecutor", "DaskExecutor", "make_executor", "single_blas", "aligned"]


def aligned(x):
    """``x`` with every numpy array in it (through tuples, lists and dicts) aligned to its item
    size, copied where it is not.

    An array that Dask scattered arrives in the worker as a view of the message buffer, at any
    byte address (45 mod 64 was seen): OpenBLAS sums such a float32 array in another order
    than an aligned one, and the bits of the product change (addresses that are multiples of
    4 gave equal bits in every case tried)."""
    if isinstance(x, np.ndarray):
        return x if x.flags.aligned else np.require(x, requirements="AC")
    if isinstance(x, tuple):
        return tuple(aligned(y) for y in x)
    if isinstance(x, list):
        return [aligned(y) for y in x]
    if isinstance(x, dict):
        return {k: aligned(v) for k, v in x.items()}
    return x


def single_blas(fn, *args):
    """``fn(*args)`` with BLAS/OpenMP limited to one thread (threadpoolctl), its array
    arguments :func:`aligned`.

    threadpoolctl's limit is process-wide, so it is taken here only where one task runs per
    process at a time (serial, a Dask worker with one thread); :class:`ThreadExecutor` takes it
    once around its whole map instead."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        return fn(*aligned(args))


class SerialExecutor:
    """Every task in the calling thread, one after the other."""

    workers = 1

    def map(self, fn, arg_tuples):
        return [single_blas(fn, *a) for a in arg_tuples]

    def close(self):
        pass


class ThreadExecutor:
    """A pool of ``workers`` threads; BLAS limited to one thread for the duration of the map.

    Tasks overlap only where they release the GIL: BLAS/LAPACK calls and ``nogil`` Numba kernels.
    """

    def __init__(self, workers):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"vdsh.workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def map(self, fn, arg_tuples):
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1):
            futs = [self._pool.submit(fn, *a) for a in arg_tuples]
            return [f.result() for f in futs]

    def close(self):
        self._pool.shutdown(wait=True)


class DaskExecutor:
    """Tasks on a ``distributed.Client``; task ``i`` of a map is pinned to worker ``i mod W``
    (``place=True``: substructure ``m`` always runs on the same worker) or left to the scheduler.

    Every numpy array of at least ``scatter_bytes`` among a map's arguments is scattered once, to
    the worker of the first task that names it; a task on another worker that needs the same
    array (a neighbouring substructure's input or target) fetches it from that worker, not from
    the client. Nothing stays on the workers between maps. ``timeout`` (seconds) bounds every
    result: a lost worker raises instead of hanging.
    """

    def __init__(self, client, place=True, timeout=120, scatter_bytes=1 << 16):
        self.client = client
        self.place = place
        self.timeout = timeout
        self.scatter_bytes = scatter_bytes
        self._workers = sorted(client.scheduler_info()["workers"])
        if not self._workers:
            raise ValueError("the Dask client has no workers")
        self.workers = len(self._workers)

    def _scatter(self, x, worker, seen):
        if isinstance(x, np.ndarray) and x.nbytes >= self.scatter_bytes:
            key = id(x)
            if key not in seen:
                seen[key] = (self.client.scatter(x, workers=None if worker is None else [worker],
                                                 hash=False), x)  # x kept alive: ids stay unique
            return seen[key][0]
        if isinstance(x, tuple):
            return tuple(self._scatter(y, worker, seen) for y in x)
        if isinstance(x, list):
            return [self._scatter(y, worker, seen) for y in x]
        if isinstance(x, dict):
            return {k: self._scatter(v, worker, seen) for k, v in x.items()}
        return x

    def map(self, fn, arg_tuples):
        futs, seen = [], {}
        for i, a in enumerate(arg_tuples):
            worker = self._workers[i % self.workers] if self.place else None
            kw = {"workers": [worker], "allow_other_workers": False} if self.place else {}
            a = self._scatter(tuple(a), worker, seen)
            futs.append(self.client.submit(single_blas, fn, *a, pure=False, **kw))
        return [f.result(timeout=self.timeout) for f in futs]

    def close(self):
        pass


def make_executor(scheduler="serial", workers=1, client=None):
    """The executor named by ``vdsh.scheduler`` (``serial``, ``threads``, ``distributed``)."""
    if scheduler == "serial":
        return SerialExecutor()
    if scheduler == "threads":
        return ThreadExecutor(workers)
    if scheduler == "distributed":
        if client is None:
            raise ValueError("vdsh.scheduler 'distributed' needs a distributed.Client (client=...)")
        return DaskExecutor(client)
    raise ValueError(f"vdsh.scheduler must be 'serial', 'threads' or 'distributed', got {scheduler!r}")
