"""DVC stage 'features' (see vdsh_numba/stages.py)."""
from vdsh_numba.cli import features

if __name__ == "__main__":
    features()
