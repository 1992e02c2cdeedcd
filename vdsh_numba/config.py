"""Launch parameters of the Hamming kernels, read by host code only.

Kernels never read these module globals (numba would freeze them into the
compiled code); host launchers pass them as arguments, so a later "cuda"
backend can keep the same signatures and its own tunables here.
"""

#: Rows of an ``np.memmap`` database read and converted per kernel call (in-memory
#: databases go to the kernels whole: every call wakes the thread pool, slow on a busy
#: machine). Peak extra memory of a search is O(nq * k + CHUNK_ROWS).
CHUNK_ROWS = 1 << 18

#: Split in-memory databases into CHUNK_ROWS pieces too (tests set it to exercise
#: the streaming merge on tiny inputs).
SPLIT_MEMORY_BLOCKS = False

#: Rows a top-k thread sweeps for all its queries before moving on: the tile of
#: 64-bit codes (``TILE_ROWS * 8`` bytes) plus the candidate buffers
#: (``TILE_ROWS * 8`` bytes) should stay in the L2 cache.
TILE_ROWS = 16384

#: Query blocks per kernel call, as a multiple of the numba thread count; each
#: block owns one set of per-thread buffers. 1 = one block per thread (static split).
BLOCKS_PER_THREAD = 1

#: The metrics' index-order pass keeps a record (12 bytes) per query and relevant
#: database item until the query's buckets are complete: queries go in blocks of
#: ``min(RANK_QUERY_BLOCK, RECORD_BYTES // (12 * n))``; each block streams the
#: database once and reuses the same record buffers (fresh pages are slow to fault in).
RANK_QUERY_BLOCK = 1024
RECORD_BYTES = 256 * 2**20

#: Queries ranked at once by the ``ties="deephash"`` reference path, which keeps a
#: ``(QUERY_BLOCK, n)`` float32 distance block in memory.
QUERY_BLOCK = 64

#: CUDA launch parameters (used by the later "cuda" backend).
CUDA_THREADS_PER_BLOCK = 128

#: Training uses one BLAS thread when its products are smaller than this (``n * width**2``
#: multiply-adds for VDSH; every minibatch method): thread wake-ups cost more than they save.
BLAS_SMALL_PRODUCT = 1 << 28
