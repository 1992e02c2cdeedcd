"""DVC stage 'features' (vdsh_numba/pipeline/features.py)."""
from vdsh_numba.pipeline import features
from vdsh_numba.pipeline.entry import stage_main

if __name__ == "__main__":
    stage_main(features.run)
