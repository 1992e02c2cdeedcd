"""DVC stage 'report' (see vdsh_numba/stages.py)."""
from vdsh_numba.cli import report

if __name__ == "__main__":
    report()
