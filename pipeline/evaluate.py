"""DVC stage 'evaluate' for one method x code length (vdsh_numba/pipeline/evaluate.py)."""
from vdsh_numba.pipeline import evaluate
from vdsh_numba.pipeline.entry import stage_main

if __name__ == "__main__":
    stage_main(evaluate.run, per_item=True)
