"""DVC stage 'evaluate' for one method x code length (see vdsh_numba/stages.py)."""
from vdsh_numba.cli import evaluate

if __name__ == "__main__":
    evaluate()
