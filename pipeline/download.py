"""DVC stage 'download' (see vdsh_numba/stages.py)."""
from vdsh_numba.cli import download

if __name__ == "__main__":
    download()
