"""DVC stage 'download' (vdsh_numba/pipeline/download.py)."""
from vdsh_numba.pipeline import download
from vdsh_numba.pipeline.entry import stage_main

if __name__ == "__main__":
    stage_main(download.run)
