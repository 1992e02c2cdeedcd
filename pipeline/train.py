"""DVC stage 'train' for one method x code length (vdsh_numba/pipeline/train.py)."""
from vdsh_numba.pipeline import train
from vdsh_numba.pipeline.entry import stage_main

if __name__ == "__main__":
    stage_main(train.run, per_item=True)
