"""Launch parameters of the Hamming kernels, read by host code only.

Kernels never read these module globals (numba would freeze them into the
compiled code); host launchers pass them as arguments, so a later "cuda"
backend can keep the same signatures and its own tunables here.
"""

#: Database rows streamed per kernel call. A chunk of 64-bit codes
#: (``CHUNK_ROWS * 8`` bytes) plus the per-thread distance buffers
#: (``CHUNK_ROWS * 8`` bytes) should stay in the L2 cache.
CHUNK_ROWS = 16384

#: Query blocks per kernel call, as a multiple of the numba thread count; each
#: block owns one set of per-thread buffers. 1 = one block per thread (static split).
BLOCKS_PER_THREAD = 1

#: Queries ranked at once by the ``ties="deephash"`` reference path, which keeps a
#: ``(QUERY_BLOCK, n)`` float32 distance block in memory.
QUERY_BLOCK = 64

#: CUDA launch parameters (used by the later "cuda" backend).
CUDA_THREADS_PER_BLOCK = 128
