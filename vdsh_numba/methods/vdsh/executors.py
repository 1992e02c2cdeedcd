"""Where independent training tasks run: serially, on a pool of threads, or on a Dask cluster.

An executor has ``map(fn, arg_tuples, where=None, keep=(), size=None) -> list`` (results in
the order of ``arg_tuples``), ``put(x, where)``, ``get(x)``, ``get_many(xs)`` and ``resident``,
and runs every task with single-threaded BLAS, so a task's arithmetic does not depend on where it
runs: the same tasks give bitwise-equal results on any executor (``tests/test_consensus.py``).
``fn`` must be a module-level function (Dask pickles it by name) that does not modify its
arguments (a Dask worker gets copies; a thread does not).

Placement (``where``, one number in ``[0, 1)`` per task: its position along the network, e.g.
``(h - 1) / L`` for hidden layer ``h``) and residence (``keep``: the positions of a task's
result tuple that stay where the task ran; ``size``: the tuples' length) matter only on a
cluster. :class:`DaskExecutor` puts position ``p`` on worker ``floor(p W)`` (contiguous blocks
of layers per worker) and returns the kept parts as references (:class:`Part`: the task's future
and the item) held by that worker: passed to a later task, a part is fetched by that task's
worker from its holder, worker to worker, so per-sample arrays that stay on the layer's worker
cross only the block boundaries. The local executors (``resident = False``) return values and
ignore both; ``put``, ``get`` and ``get_many`` are the identity there.

Used by :mod:`vdsh_numba.methods.vdsh.consensus` (the local problems of the consensus scheme).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from operator import getitem

import numpy as np

__all__ = ["LocalExecutor", "SerialExecutor", "ThreadExecutor", "DaskExecutor", "Part", "PART", "make_executor",
           "single_blas", "task_args", "worker_bytes_sent"]


#: the first item of a part reference ``(PART, future, k)``, the form a :class:`Part` takes among a
#: Dask task's arguments (Dask resolves the future inside it; :func:`task_args` picks item ``k``)
PART = "vdsh-executor-part"


def task_args(x):
    """``x`` as a task reads it, through tuples, lists and dicts: every part reference
    ``(PART, result, k)`` replaced by ``result[k]``, every numpy array aligned to its item size
    (copied where it is not).

    An array that Dask scattered arrives in the worker as a view of the message buffer, at any
    byte address (45 mod 64 was seen): OpenBLAS sums such a float32 array in another order
    than an aligned one, and the bits of the product change (addresses that are multiples of
    4 gave equal bits in every case tried)."""
    if isinstance(x, np.ndarray):
        return x if x.flags.aligned else np.require(x, requirements="AC")
    if isinstance(x, tuple):
        if len(x) == 3 and isinstance(x[0], str) and x[0] == PART:
            return task_args(x[1][x[2]])
        return tuple(task_args(y) for y in x)
    if isinstance(x, list):
        return [task_args(y) for y in x]
    if isinstance(x, dict):
        return {k: task_args(v) for k, v in x.items()}
    return x


def single_blas(fn, *args):
    """``fn(*args)`` with BLAS/OpenMP limited to one thread (threadpoolctl), its arguments as
    :func:`task_args` gives them (part references resolved, arrays aligned).

    threadpoolctl's limit is process-wide, so it is taken here only where one task runs per
    process at a time (serial, a Dask worker with one thread); :class:`ThreadExecutor` takes it
    once around its whole map instead."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        return fn(*task_args(args))


class LocalExecutor:
    """What the executors that run in this process share: values in memory, no placement."""

    resident = False

    def put(self, x, where=0.0):
        """``x`` where a task at position ``where`` reads it: here, ``x`` itself."""
        return x

    def get(self, x):
        """The value of ``x`` (a result part kept by :meth:`map`): here, ``x`` itself."""
        return x

    def get_many(self, xs):
        """The values of ``xs``: here, ``xs`` themselves."""
        return list(xs)

    def close(self):
        pass


class SerialExecutor(LocalExecutor):
    """Every task in the calling thread, one after the other."""

    workers = 1

    def map(self, fn, arg_tuples, where=None, keep=(), size=None):
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

    def map(self, fn, arg_tuples, where=None, keep=(), size=None):
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

    ``keep``: the parts of a task's result tuple that stay on its worker, returned as
    :class:`Part` references to the result; the other parts are gathered (one task per worker
    and map picks them out of that worker's results), and without ``keep`` the whole result is.
    ``size``: the length of every result tuple, where known; with every item kept, nothing is
    gathered and the map returns at once (a chain of maps is submitted without waiting; an error
    surfaces where a later map gathers). A future or a :class:`Part` among a task's arguments
    (nested in tuples, lists or dicts) is resolved on the task's worker, fetched from the worker
    that holds it: a part read by a task on another worker is first picked out of its result
    tuple where it is (one small task per part, the first time), so that only the item travels.
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
        info = client.scheduler_info()["workers"]
        self._workers = sorted(info)
        if not self._workers:
            raise ValueError("the Dask client has no workers")
        self.workers = len(self._workers)
        self._host_threads = {a: sum(v["nthreads"] for v in info.values() if v["host"] == info[a]["host"])
                              for a in self._workers}

    def worker_at(self, where):
        """The address of the worker holding position ``where`` (in ``[0, 1)``)."""
        if not 0.0 <= where < 1.0:
            raise ValueError(f"a task's position (where) must be in [0, 1), got {where!r}")
        return self._workers[min(int(where * self.workers), self.workers - 1)]

    def host_threads(self, where):
        """The threads of every worker on the machine of position ``where``'s worker: what a
        task there may use while the rest of the cluster waits for it (a layer of a chain)."""
        return self._host_threads[self.worker_at(where)]

    def _scatter(self, x, worker, seen):
        if isinstance(x, Part):
            if worker is None or x.worker in (None, worker):
                return (PART, x.future, x.index)
            if x.item is None:  # to another worker: the item alone travels, picked out where it is
                x.item = self.client.submit(getitem, x.future, x.index, pure=False, **_on(x.worker))
            return x.item
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
        """The value of a future (:meth:`put`), a :class:`Part` (kept by :meth:`map`), or any other
        value as it is."""
        return self.get_many([x])[0]

    def get_many(self, xs):
        """The values of ``xs``, as :meth:`get`: the parts held by one worker picked out there
        by one task, so that only the parts cross, not their whole result tuples; one wait for
        all of them."""
        out = list(xs)
        parts = [i for i, x in enumerate(out) if isinstance(x, Part)]
        futs = [i for i, x in enumerate(out) if _is_future(x)]
        picks = self._per_holder(_pick, [out[i].index for i in parts], [out[i].future for i in parts],
                                 [out[i].worker for i in parts])
        got = self._gather([out[i] for i in futs] + [f for _, f in picks])
        for i, v in zip(futs, got):
            out[i] = v
        for (idx, _), vals in zip(picks, got[len(futs):]):
            for j, v in zip(idx, vals):
                out[parts[j]] = v
        return out

    def _per_holder(self, fn, args, futs, workers):
        """``fn([args[i] ...], *[result i ...])`` once per worker, over the results held there
        (``futs[i]``, placed on ``workers[i]``; an unplaced one, whose worker is not known here,
        alone). Returns ``[(indices, future)]``, the future's value one item per index."""
        groups = {}
        for i, worker in enumerate(workers):
            groups.setdefault(worker if worker is not None else ("unplaced", i), []).append(i)
        return [(idx, self.client.submit(fn, [args[i] for i in idx], *[futs[i] for i in idx], pure=False,
                                         **_on(worker if isinstance(worker, str) else None)))
                for worker, idx in groups.items()]

    def _gather(self, futs):
        """The values of ``futs``; a lost worker raises after ``timeout`` seconds."""
        from distributed import wait
        wait(futs, timeout=self.timeout)
        return self.client.gather(futs)

    def map(self, fn, arg_tuples, where=None, keep=(), size=None):
        futs, workers, seen = [], [], {}
        keep = tuple(keep)
        for i, a in enumerate(arg_tuples):
            if not self.place:
                worker = None
            elif where is not None:
                worker = self.worker_at(where[i])
            else:
                worker = self._workers[i % self.workers]
            a = self._scatter(tuple(a), worker, seen)
            futs.append(self.client.submit(single_blas, fn, *a, pure=False, **_on(worker)))
            workers.append(worker)
        if not keep:
            return list(self._gather(futs))
        if size is not None and set(keep) == set(range(size)):  # nothing to gather: no waiting
            return [tuple(Part(f, k, w) for k in range(size)) for f, w in zip(futs, workers)]
        # the parts not kept: one task per worker picks them out of its results
        rests = self._per_holder(_rests, [keep] * len(futs), futs, workers)
        out = [None] * len(futs)
        for (idx, _), got in zip(rests, self._gather([f for _, f in rests])):
            for i, rest in zip(idx, got):
                rest = list(rest)
                out[i] = tuple(Part(futs[i], k, workers[i]) if k in keep else rest.pop(0)
                               for k in range(len(keep) + len(rest)))
        return out

    def close(self):
        pass


def _is_future(x):
    from distributed import Future
    return isinstance(x, Future)


class Part:
    """Item ``index`` of the result tuple of a Dask task (``future``), held by ``worker`` (its
    placement; None where the scheduler chose): a part that :meth:`DaskExecutor.map` kept on the
    worker. Passed to a later task, it arrives there as the item; :meth:`DaskExecutor.get`
    fetches it."""

    __slots__ = ("future", "index", "worker", "item")

    def __init__(self, future, index, worker=None):
        self.future, self.index, self.worker = future, index, worker
        self.item = None  # the item alone, picked out on its worker once a task elsewhere reads it

    def __repr__(self):
        return f"Part({self.future.key!r}, {self.index}, worker={self.worker!r})"


def _on(worker):
    """The ``client.submit`` keywords that pin a task to ``worker`` (none for ``None``)."""
    return {"workers": [worker], "allow_other_workers": False} if worker is not None else {}


def _rests(keeps, *results):
    """The parts of each result tuple not in its ``keeps[i]``, in order (what a kept-part map
    gathers)."""
    return [tuple(v for k, v in enumerate(r) if k not in keep) for keep, r in zip(keeps, results)]


def _pick(indices, *results):
    """Item ``indices[i]`` of ``results[i]``, for each ``i``."""
    return [r[k] for k, r in zip(indices, results)]


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
