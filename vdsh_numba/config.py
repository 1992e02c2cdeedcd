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

#: 64-bit words of database codes a top-k / range-search thread sweeps for all its
#: queries before moving on (``TILE_ROWS // words-per-code`` rows): the tile
#: (``TILE_ROWS * 8`` bytes) should stay in the L2 cache while every query of the
#: thread's block reads it.
TILE_ROWS = 16384

#: Top-k: candidate buffer entries per query beyond ``2k + 64`` (at most ``2k`` more;
#: 8 bytes each). A full buffer is compacted in O(buffer); with room for the few
#: thousand candidates a top-1000 of random codes takes in, it is hardly ever full.
TOPK_BUFFER_EXTRA = 4096

#: Top-k: rows of the sample on which every query's starting bound is estimated
#: (spread over the first block of the database; a multiple of 64), and the least
#: expected number of top-k rows in it for the estimate to be made at all.
TOPK_SAMPLE_ROWS = 2048
TOPK_SAMPLE_MIN = 8

#: Top-k: an in-memory database of at most this many bytes (one block) is searched one
#: query at a time, its candidates appended to per-distance buckets (``hamming._topk_buckets``):
#: the L2 cache of one core here (AMD Zen 4: 1 MiB). Measured, top-1000 of 1,000 queries,
#: 1 thread, CPU time, tiled sweep -> buckets: 59,000 128-bit codes (944 KB) 19.1 -> 16.5 ms,
#: 120,000 64-bit (960 KB) 24.1 -> 18.8 ms, 200,000 64-bit (1.6 MB) 41 -> 34 ms (not
#: taken: above the L2, untested at 2 threads). 0 = always the tiled sweep.
TOPK_FUSED_BYTES = 1 << 20

#: Top-k of such a database: sub-blocks of 64 rows swept between two updates of the
#: bound (their masks, distance bytes and offsets stay in L1), and the most bytes of
#: buckets a thread may hold (``bins * (k + 64 * TOPK_BUCKET_BATCH) * 4``; beyond it the
#: tiled sweep). Measured at 1,000 x 59,000 64-bit, top-1000, 1 thread (prototype): 16
#: sub-blocks 10.1 ms, 32 10.0, 128 10.2, 256 10.1.
TOPK_BUCKET_BATCH = 32
TOPK_BUCKET_BYTES = 8 << 20

#: Top-k: sort a query's candidates by one vector pass per distance when at most this
#: many distances lie between the smallest and the bound, else by a counting sort.
TOPK_PASS_BINS = 32

#: Top-k, that sort: the keys more than this many distances below the largest candidate
#: distance are picked into a short list first, and their passes run over it (1,000 x
#: 59,000 64-bit, top-1000, 1 thread: the sort 3.8 ms without, about 3.1 with 2).
TOPK_DEEP_GAP = 2

#: Query blocks per kernel call, as a multiple of the numba thread count; each
#: block owns one set of per-thread buffers. 1 = one block per thread (static split).
BLOCKS_PER_THREAD = 1

#: Queries ranked at once by the ``ties="deephash"`` reference path, which keeps a
#: ``(QUERY_BLOCK, n)`` float32 distance block in memory.
QUERY_BLOCK = 64

# --- the "cuda" backend (vdsh_numba.search.gpu_hamming, gpu_admm, vdsh/cuda_ops) ----------------------
# Read by the host launchers only and passed to kernels as arguments or launch shapes, so
# tests patch them small to make tiny inputs span several blocks.

#: Threads per block of the 1-D elementwise / per-sample / per-query kernels.
CUDA_THREADS_PER_BLOCK = 128

#: Training uses one BLAS thread when its products are smaller than this (``n * width**2``
#: multiply-adds for VDSH; every minibatch method): thread wake-ups cost more than they save.
BLAS_SMALL_PRODUCT = 1 << 28

#: Most blocks of a grid-stride kernel (ADMM kernels, GEMM tiles); beyond it each thread
#: handles several items. Tests set it small: the simulator's cost is per thread.
CUDA_MAX_BLOCKS = 1 << 16

#: Side of the square tiles of the shared-memory GEMM (a tile x tile thread block; two
#: float32 tiles of shared memory). Used when CuPy (cuBLAS) is not installed.
CUDA_GEMM_TILE = 16

#: Use cuBLAS through CuPy for the dense products when CuPy is importable.
CUDA_USE_CUPY = True

#: Queries per block of the Hamming histogram kernel (their histograms share a block's
#: shared memory: QUERIES_PER_BLOCK * (64 * words + 1) int32).
CUDA_HAMMING_QUERIES_PER_BLOCK = 8

#: The database is cut into segments, one thread per (query, segment) in the selection
#: pass; enough segments to have about this many threads, each segment at least
#: CUDA_HAMMING_MIN_SEGMENT_ROWS rows.
CUDA_HAMMING_TARGET_THREADS = 1 << 17
CUDA_HAMMING_MIN_SEGMENT_ROWS = 2048

#: Bytes of the per-(query, segment, distance) counters a search may allocate; queries
#: go in batches that fit.
CUDA_HAMMING_COUNTER_BYTES = 512 * 2**20

#: Rows per device batch when the CUDA backend encodes (forward pass of VDSH._project).
CUDA_FORWARD_ROWS = 1 << 16
