"""Sharded encoding, Hamming search and metrics on a Dask cluster.

Optional extra: ``pip install '.[distributed]'`` (dask[distributed]). Nothing here is
imported by the rest of the package.

* :func:`encode_sharded` encodes a database stored in chunks (a Dask array, or ``.npy``
  shards on disk) shard by shard on the workers, the trained model broadcast once.
* :class:`ShardedHammingIndex` keeps one :class:`~vdsh_numba.search.hamming.HammingIndex` per
  shard *on the workers*; a search runs each shard's Numba kernel where its data lives and
  merges the per-shard top-k lists by a tree reduction into exactly the ``(D, I)`` of one
  ``HammingIndex`` over the concatenated database (global indices, ties by ascending
  global index).
* :meth:`ShardedHammingIndex.evaluate` runs the two passes of :mod:`vdsh_numba.search.metrics`
  (:class:`~vdsh_numba.search.metrics.RankingPasses`) on every shard where it lives and merges them
  with the same public functions: it returns exactly the keys and values of
  :func:`~vdsh_numba.search.metrics.evaluate_codes` on the concatenated database.

Every shard is created by a task (from data held by the scheduler, a file on disk or a
generator function), so if a worker dies Dask recomputes its shards from their lineage: a
search then either completes correctly (``retries``) or raises :class:`ShardedSearchError`;
it never returns a partial answer.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .hamming import DIST_PAD, HammingIndex, check_codes
from .metrics import Evaluation, RankingPasses, merge_ranking_stats, shard_offsets

__all__ = ["ShardedHammingIndex", "ShardedSearchError", "encode_sharded", "merge_topk",
           "local_cluster", "get_client"]


class ShardedSearchError(RuntimeError):
    """A sharded operation could not complete (a worker or shard was lost for good)."""


def _require_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise ImportError("vdsh_numba.search.distributed needs dask[distributed]: "
                          "pip install 'vdsh-numba[distributed]'") from e


def local_cluster(n_workers=2, threads_per_worker=1, numba_threads=None, **kw):
    """A ``LocalCluster`` of worker processes and its client (for the pipeline and tests).

    ``numba_threads``: Numba (and BLAS) threads in each worker; default ``threads_per_worker``,
    so that workers x threads never oversubscribe the cores (each shard's kernel is itself
    parallel: with two tasks per worker each using every core, 2 workers ran 0.78x of 1).

    The workers keep glibc's own ``malloc`` settings: Dask's nanny would start them with
    ``MALLOC_TRIM_THRESHOLD_=65536`` (its ``distributed.nanny.pre-spawn-environ``), and setting
    it at all turns off glibc's sliding mmap threshold, so that every array of more than
    128 KiB a task makes is a fresh ``mmap``, page-faulted and zeroed, and unmapped again.
    The consensus tasks make many temporaries of ``n x w`` (20 MB at n = 5,000, w = 1,024):
    their time in a worker fell from 29.1 to 21.9 s per sweep (depth 16 x 1,024, one worker)
    without it. The variable is also kept out of the workers when a nanny started earlier in
    this process left it in ``os.environ`` (nannies set it there before spawning).
    """
    _require_distributed()
    import os

    import dask
    from distributed import Client, LocalCluster
    nt = str(int(numba_threads or threads_per_worker))
    env = {"NUMBA_NUM_THREADS": nt, "OPENBLAS_NUM_THREADS": nt, "OMP_NUM_THREADS": nt,
           **kw.pop("env", {})}
    inherited = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                   processes=True, dashboard_address=None, env=env, **kw)
    finally:
        if inherited is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = inherited
    return cluster, Client(cluster)


def get_client(address=None, n_workers=2):
    """A client of the scheduler at ``address``, or of a LocalCluster started for the run.

    Returns ``(client, close)``; call ``close()`` when done (it also stops a LocalCluster)."""
    _require_distributed()
    from distributed import Client
    if address:
        c = Client(address)
        return c, c.close
    cluster, c = local_cluster(n_workers=n_workers)

    def close():
        c.close()
        cluster.close()
    return c, close


# --------------------------------------------------------------------------- per-shard metric passes

def _task_hist(codes, labels, queries, qlabels, bits):
    """Pass 1 of the metrics on one shard: its items per distance and relevance level."""
    return RankingPasses(queries, codes, qlabels, labels, bits, allow_empty=True).histogram()


def _task_rank_sums(codes, labels, queries, qlabels, bits, before, cutoffs, ndcg_k):
    """Pass 2 on one shard: sums at the global ranks (ties by global index) of its relevant
    items; ``before`` = this shard's :func:`~vdsh_numba.search.metrics.shard_offsets`."""
    passes = RankingPasses(queries, codes, qlabels, labels, bits, allow_empty=True)
    return passes.rank_sums(before[0], before[1], cutoffs, ndcg_k)


# --------------------------------------------------------------------------- merging top-k

DIST_PAD_ = np.int32(DIST_PAD)


@njit(parallel=True, cache=True)
def _merge2(Da, Ia, Db, Ib, k, Do, Io):
    """Merge two per-query lists sorted by (distance, index) into the first k."""
    nq = Da.shape[0]
    ka, kb = Da.shape[1], Db.shape[1]
    for q in prange(nq):
        i = 0
        j = 0
        for t in range(k):
            takea = False
            if i < ka and j < kb:
                da, db = Da[q, i], Db[q, j]
                if da < db:
                    takea = True
                elif da == db:
                    ia, ib = Ia[q, i], Ib[q, j]
                    # padding (-1) sorts after every real index at the pad distance
                    takea = ib < 0 or (ia >= 0 and ia < ib)
            elif i < ka:
                takea = True
            elif j >= kb:
                Do[q, t] = DIST_PAD_
                Io[q, t] = -1
                continue
            if takea:
                Do[q, t] = Da[q, i]
                Io[q, t] = Ia[q, i]
                i += 1
            else:
                Do[q, t] = Db[q, j]
                Io[q, t] = Ib[q, j]
                j += 1


def merge_topk(a, b, k):
    """Merge two ``(D, I)`` results (each sorted by distance, then index) into the top ``k``."""
    Da, Ia = a
    Db, Ib = b
    Do = np.empty((Da.shape[0], k), np.int32)
    Io = np.empty((Da.shape[0], k), np.int64)
    _merge2(Da, Ia, Db, Ib, k, Do, Io)
    return Do, Io


# --------------------------------------------------------------------------- worker tasks

def _index_from_codes(codes, bits):
    idx = HammingIndex(bits)
    idx.add(np.ascontiguousarray(codes))
    return idx


def _index_from_npy(path, bits):
    idx = HammingIndex(bits)
    idx.add(np.load(path, mmap_mode="r"))
    return idx


def _index_from_generator(fn, bits, start, stop, seed):
    idx = HammingIndex(bits)
    idx.add(fn(start, stop, seed))
    return idx


def _shard_search(idx, queries, k, offset):
    D, I = idx.search(queries, min(k, max(idx.ntotal, 1)))
    I = np.where(I >= 0, I + offset, -1)
    if D.shape[1] < k:  # pad to k the faiss way
        D = np.concatenate([D, np.full((D.shape[0], k - D.shape[1]), DIST_PAD, np.int32)], axis=1)
        I = np.concatenate([I, np.full((I.shape[0], k - I.shape[1]), -1, np.int64)], axis=1)
    return D, I


def _shard_range(idx, queries, radius, offset):
    lims, D, I = idx.range_search(queries, radius)
    return lims, D, I + offset


def _shard_ntotal(idx):
    return idx.ntotal


def _encode_block(model, X):
    return model.encode(np.asarray(X))


def _encode_npy(model, path):
    return model.encode(np.load(path, mmap_mode="r"))


# --------------------------------------------------------------------------- the index

class ShardedHammingIndex:
    """One :class:`HammingIndex` per shard, held by the Dask workers.

    Parameters
    ----------
    bits : int
    client : distributed.Client
    retries : int
        How many times a search is resubmitted after a lost worker before
        :class:`ShardedSearchError` is raised.
    timeout : float
        Seconds one attempt may wait on the cluster (a dead worker can otherwise leave a
        broadcast or a result waiting for ever); past it the attempt counts as failed.
    """

    def __init__(self, bits, client, retries=2, timeout=300.0):
        _require_distributed()
        self.bits = int(bits)
        self.client = client
        self.retries = int(retries)
        self.timeout = float(timeout)  # seconds any one attempt may wait on the cluster
        self._shards = []  # (future of HammingIndex, global offset, rows)
        # per shard, for evaluate(): None, or futures of (its packed codes, its labels); the codes
        # stay on the workers beside the index (its uint64 words are the index's own)
        self._evaldata = []

    @property
    def ntotal(self):
        return sum(n for _, _, n in self._shards)

    @property
    def nshards(self):
        return len(self._shards)

    def _append(self, fut, rows, codes=None, labels=None):
        self._shards.append((fut, self.ntotal, int(rows)))
        self._evaldata.append(None if labels is None else
                              (codes, self.client.submit(np.asarray, labels, pure=False)))

    def add(self, codes, labels=None):
        """Add one shard of packed codes (an array: the task holds it, so it can be recomputed),
        optionally with its labels (needed by :meth:`evaluate`; the shard's codes are then kept
        on the workers too)."""
        codes = check_codes(codes, self.bits, "codes")
        if labels is None:
            self._append(self.client.submit(_index_from_codes, codes, self.bits, pure=False),
                         codes.shape[0])
            return
        if len(labels) != codes.shape[0]:
            raise ValueError(f"labels has {len(labels)} rows but codes has {codes.shape[0]}")
        cf = self.client.submit(np.asarray, codes, pure=False)
        self._append(self.client.submit(_index_from_codes, cf, self.bits, pure=False), codes.shape[0],
                     cf, labels)

    def add_npy(self, path, rows):
        """Add one shard stored as a ``.npy`` file readable by every worker (memory-mapped there)."""
        self._append(self.client.submit(_index_from_npy, str(path), self.bits, pure=False), rows)

    def add_futures(self, futures, rows, labels=None):
        """Add shards of codes already on the workers (futures of uint8 arrays), in order;
        ``labels``: one label array per shard (optional)."""
        for s, (f, n) in enumerate(zip(futures, rows)):
            self._append(self.client.submit(_index_from_codes, f, self.bits, pure=False), n,
                         f, None if labels is None else labels[s])

    def add_generated(self, fn, n, shard_rows, seed=0):
        """Generate ``n`` codes shard by shard *on the workers*: ``fn(start, stop, seed)`` returns
        the uint8 codes of global rows ``start..stop``. Nothing is gathered to the client."""
        for s in range(0, int(n), int(shard_rows)):
            e = min(s + int(shard_rows), int(n))
            self._append(self.client.submit(_index_from_generator, fn, self.bits, s, e, seed, pure=False),
                         e - s)

    def persist(self):
        """Wait until every shard's index exists on the workers."""
        from distributed import wait
        wait([f for f, _, _ in self._shards])
        return self

    # --- search ----------------------------------------------------------------
    def _scatter(self, x):
        # hash=False: a unique key per call; content-hashed keys can collide with a key the
        # scheduler is still releasing from an earlier call ("lost dependencies")
        return self.client.scatter(x, broadcast=True, timeout=self.timeout, hash=False)

    def _gather(self, futs):
        from distributed import wait
        wait(futs, timeout=self.timeout)
        return self.client.gather(futs)

    def _guard(self, run):
        from distributed.client import FutureCancelledError, FuturesCancelledError
        from distributed.scheduler import KilledWorker
        last = None
        for _attempt in range(self.retries + 1):
            try:
                return run()
            except (KilledWorker, FutureCancelledError, FuturesCancelledError, OSError, TimeoutError) as e:
                last = e
        raise ShardedSearchError(f"sharded search over {self.nshards} shards failed after "
                                 f"{self.retries + 1} attempts: {type(last).__name__}: {last}")

    def search(self, queries, k):
        """Global top-``k``: ``(D int32 (nq, k), I int64 (nq, k))``, equal to one HammingIndex's."""
        queries = check_codes(queries, self.bits, "queries")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not self._shards:
            raise ValueError("the index is empty: add shards before search()")
        k = int(k)

        def run():
            qf = self._scatter(queries)
            level = [self.client.submit(_shard_search, f, qf, k, off, pure=False) for f, off, _ in self._shards]
            while len(level) > 1:  # tree reduction, pairs of neighbouring shards
                nxt = [self.client.submit(merge_topk, level[i], level[i + 1], k, pure=False)
                       for i in range(0, len(level) - 1, 2)]
                if len(level) % 2:
                    nxt.append(level[-1])
                level = nxt
            D, I = level[0].result(timeout=self.timeout)
            if D.shape != (queries.shape[0], k):
                raise ShardedSearchError(f"merged result has shape {D.shape}, expected {(queries.shape[0], k)}")
            return D, I

        return self._guard(run)

    def range_search(self, queries, radius):
        """All items within ``radius``: ``(lims, D, I)`` in CSR layout, each query's hits sorted by
        (distance, global index), as :meth:`HammingIndex.range_search`."""
        queries = check_codes(queries, self.bits, "queries")

        def run():
            qf = self._scatter(queries)
            parts = self._gather([self.client.submit(_shard_range, f, qf, int(radius), off, pure=False)
                                  for f, off, _ in self._shards])
            nq = queries.shape[0]
            counts = sum(np.diff(p[0]) for p in parts)
            lims = np.zeros(nq + 1, np.int64)
            np.cumsum(counts, out=lims[1:])
            D = np.empty(lims[-1], np.int32)
            I = np.empty(lims[-1], np.int64)
            for q in range(nq):
                d = np.concatenate([p[1][p[0][q]:p[0][q + 1]] for p in parts])
                i = np.concatenate([p[2][p[0][q]:p[0][q + 1]] for p in parts])
                o = np.argsort(d, kind="stable")  # shards are in index order: stable keeps ties by index
                D[lims[q]:lims[q + 1]] = d[o]
                I[lims[q]:lims[q + 1]] = i[o]
            return lims, D, I

        return self._guard(run)

    def evaluate(self, queries, query_labels, radius=2, topk=None):
        """Every metric of :func:`vdsh_numba.search.metrics.evaluate_codes` on the concatenated
        database (ties by global index): same keys, same values.

        The two passes of :class:`~vdsh_numba.search.metrics.RankingPasses` run on each shard where
        it lives: the per-distance histograms, then, with the offsets they give
        (:func:`~vdsh_numba.search.metrics.shard_offsets`), each shard's sums at its relevant items'
        global ranks; :func:`~vdsh_numba.search.metrics.merge_ranking_stats` and
        :meth:`~vdsh_numba.search.metrics.Evaluation.scores` finish on the client. Returns
        ``(scalars, pr_curve)`` as ``evaluate_codes``.
        """
        queries = check_codes(queries, self.bits, "queries")
        ev = Evaluation(self.ntotal, radius, topk)
        if not self._shards:
            raise ValueError("the index is empty: add shards before evaluate()")
        if any(d is None for d in self._evaldata):
            raise ValueError("evaluate() needs the labels of every shard: add(codes, labels=...)")
        ql = np.asarray(query_labels)
        bits = self.bits

        def run():
            qf = self._scatter(queries)
            lf = self._scatter(ql)
            hists = self._gather([self.client.submit(_task_hist, c, lab, qf, lf, bits, pure=False)
                                  for c, lab in self._evaldata])
            accs = self._gather([self.client.submit(_task_rank_sums, c, lab, qf, lf, bits, before,
                                                    ev.cutoffs, ev.ndcg_k, pure=False)
                                 for (c, lab), before in zip(self._evaldata, shard_offsets(hists))])
            return hists, accs

        hists, accs = self._guard(run)
        rows = [int(h[0].sum()) for h in hists] if queries.shape[0] else []
        if rows and rows != [n for _, _, n in self._shards]:
            raise ShardedSearchError(f"the shards hold {rows} rows, the index recorded "
                                     f"{[n for _, _, n in self._shards]} (wrong rows in add_futures?)")
        st = merge_ranking_stats(hists, accs, self.ntotal, ev.cutoffs, ev.ndcg_k)
        return ev.scores(st)


# --------------------------------------------------------------------------- encoding

def encode_sharded(model, data, client, bits=None):
    """Encode a database stored in chunks, shard by shard on the workers.

    Parameters
    ----------
    model : fitted :class:`~vdsh_numba.methods.base.HashingModel`, broadcast once to every worker.
    data : dask.array.Array (rows chunked) or a list of ``.npy`` paths.

    Returns
    -------
    futures : list of futures of packed codes (one per shard, in order), and their row counts.
    Pass them to :meth:`ShardedHammingIndex.add_futures` to index them where they live.
    """
    _require_distributed()
    mf = client.scatter(model, broadcast=True, hash=False)
    if isinstance(data, (list, tuple)):
        futs = [client.submit(_encode_npy, mf, str(p), pure=False) for p in data]
        rows = [int(np.load(p, mmap_mode="r").shape[0]) for p in data]
        return futs, rows
    import dask.array as da
    if not isinstance(data, da.Array) or data.ndim != 2:
        raise TypeError(f"data must be a 2-D dask array or a list of .npy paths, got {type(data).__name__}")
    blocks = data.to_delayed()[:, 0] if data.numblocks[1] == 1 else data.rechunk({1: -1}).to_delayed()[:, 0]
    futs = [client.submit(_encode_block, mf, client.compute(b), pure=False) for b in blocks]
    return futs, [int(c) for c in data.chunks[0]]
