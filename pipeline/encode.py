"""DVC stage 'encode' for one method x code length (see vdsh_numba/stages.py)."""
from vdsh_numba.cli import encode

if __name__ == "__main__":
    encode()
