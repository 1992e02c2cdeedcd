"""DVC stage 'encode' for one method x code length (vdsh_numba/pipeline/encode.py)."""
from vdsh_numba.pipeline import encode
from vdsh_numba.pipeline.entry import stage_main

if __name__ == "__main__":
    stage_main(encode.run, per_item=True)
