"""DVC stage 'report' (vdsh_numba/pipeline/report.py)."""
from vdsh_numba.pipeline import report
from vdsh_numba.pipeline.entry import stage_main

if __name__ == "__main__":
    stage_main(report.run)
