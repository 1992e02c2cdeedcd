"""Where independent training tasks run: serially, on a pool of threads, or on a Dask cluster.

An executor has ``map(fn, arg_tuples, where=None, keep=()) -> list`` (results in the order of
``arg_tuples``), ``put(x, where)``, ``get(x)`` and ``resident``, and runs every task with
single-threaded BLAS, so a task's arithmetic does not depend on where it runs: the same tasks
give bitwise-equal results on any executor (``tests/test_consensus.py``). ``fn`` must be a
module-level function (Dask pickles it by name) that does not modify its arguments (a Dask
worker gets copies; a thread does not).

Placement (``where``, one number in ``[0, 1)`` per task: its position along the network, e.g.
``(h - 1) / L`` for hidden layer ``h``) and residence (``keep``: the positions of a task's
result tuple that stay where the task ran) matter only on a cluster. :class:`DaskExecutor` puts
position ``p`` on worker ``floor(p W)`` (contiguous blocks of layers per worker) and returns the
kept parts as futures held by that worker: passed to a later task, a future is fetched by that
task's worker from its holder, worker to worker, so per-sample arrays that stay on the layer's
worker cross only the block boundaries. The local executors (``resident = False``) return values
and ignore both; ``put`` and ``get`` are the identity there.

Used by :mod:`vdsh_numba.methods.vdsh.consensus` (the local problems of the consensus scheme).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["LocalExecutor", "SerialExecutor", "ThreadExecutor", "DaskExecutor", "make_executor", "single_blas", "aligned",
           "worker_bytes_sent"]


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


class LocalExecutor:
    """What the executors that run in this process share: values in memory, no placement."""

    resident = False

    def put(self, x, where=0.0):
        """``x`` where a task at position ``where`` reads it: here, ``x`` itself."""
        return x

    def get(self, x):
        """The value of ``x`` (a result part kept by :meth:`map`): here, ``x`` itself."""
        return x

    def close(self):
        pass


class SerialExecutor(LocalExecutor):
    """Every task in the calling thread, one after the other."""

    workers = 1

    def map(self, fn, arg_tuples, where=None, keep=()):
        return [single_blas(fn, *a) for a in arg_tuples]


class ThreadExecutor(LocalExecutor):
    """A pool of ``workers`` threads; BLAS limited to one thread for the duration of the map.

    Tasks overlap only where they release the GIL: BLAS/LAPACK calls and ``nogil`` Numba kernels.
    """

    def __init__(self, workers):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"vdsh.workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def map(self, fn, arg_tuples, where=None, keep=()):
        from threadpoolctl import threadpool_limits
        with threadpool_limits(limits=1):
            futs = [self._pool.submit(fn, *a) for a in arg_tuples]
            return [f.result() for f in futs]

    def close(self):
        self._pool.shutdown(wait=True)


class DaskExecutor:
    """Tasks on a ``distributed.Client``, placed by position: a task at position ``p`` (``where``)
    runs on worker ``floor(p W)`` of the ``W`` workers (sorted by address), so consecutive layers
    share a worker and neighbouring blocks meet at ``W - 1`` boundaries. Without ``where`` (or
    with ``place=False``) task ``i`` of a map runs on worker ``i mod W`` (or where the scheduler
    likes).

    ``keep``: the parts of a task's result tuple that stay on its worker, returned as futures
    (one small task each picks them out of the result); the other parts are gathered, and
    without ``keep`` the whole result is. A future among a task's arguments (nested in tuples,
    lists or dicts) is resolved on the task's worker, fetched from the worker that holds it.
    Every numpy array of at least ``scatter_bytes`` among a map's arguments is scattered once, to
    the worker of the first task that names it. ``timeout`` (seconds) bounds every gather: a lost
    worker raises instead of hanging.
    """

    resident = True

    def __init__(self, client, place=True, timeout=600, scatter_bytes=1 << 16):
        self.client = client
        self.place = place
        self.timeout = timeout
        self.scatter_bytes = scatter_bytes
        self._workers = sorted(client.scheduler_info()["workers"])
        if not self._workers:
            raise ValueError("the Dask client has no workers")
        self.workers = len(self._workers)

    def worker_at(self, where):
        """The address of the worker holding position ``where`` (in ``[0, 1)``)."""
        if not 0.0 <= where < 1.0:
            raise ValueError(f"a task's position (where) must be in [0, 1), got {where!r}")
        return self._workers[min(int(where * self.workers), self.workers - 1)]

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

    def put(self, x, where=0.0):
        """``x`` scattered to the worker of position ``where``: a future held there."""
        return self.client.scatter(x, workers=[self.worker_at(where)], hash=False)

    def get(self, x):
        """The value of a future (:meth:`put`, a part kept by :meth:`map`); other values as they are."""
        return x.result(timeout=self.timeout) if _is_future(x) else x

    def map(self, fn, arg_tuples, where=None, keep=()):
        from operator import getitem
        futs, seen = [], {}
        keep = tuple(keep)
        for i, a in enumerate(arg_tuples):
            if not self.place:
                worker = None
            elif where is not None:
                worker = self.worker_at(where[i])
            else:
                worker = self._workers[i % self.workers]
            kw = {"workers": [worker], "allow_other_workers": False} if worker is not None else {}
            a = self._scatter(tuple(a), worker, seen)
            f = self.client.submit(single_blas, fn, *a, pure=False, **kw)
            if keep:
                parts = {k: self.client.submit(getitem, f, k, pure=False, **kw) for k in keep}
                rest = self.client.submit(_drop, f, keep, pure=False, **kw)
                f = (parts, rest)
            futs.append(f)
        out = []
        for f in futs:
            if not keep:
                out.append(f.result(timeout=self.timeout))
                continue
            parts, rest = f
            rest = list(rest.result(timeout=self.timeout))
            out.append(tuple(parts[k] if k in parts else rest.pop(0) for k in range(len(keep) + len(rest))))
        return out

    def close(self):
        pass


def _is_future(x):
    from distributed import Future
    return isinstance(x, Future)


def _drop(result, keep):
    """The parts of a result tuple not in ``keep``, in order (what a kept-part map gathers)."""
    return tuple(v for k, v in enumerate(result) if k not in keep)


def worker_bytes_sent(client):
    """The bytes the workers of ``client``'s cluster have sent so far (to each other and to
    clients: Dask's ``transfer_outgoing_bytes_total``, summed over the workers)."""
    return sum(client.run(_outgoing_bytes).values())


def _outgoing_bytes(dask_worker):
    return int(dask_worker.transfer_outgoing_bytes_total)


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
