"""DVC stage 'train' for one method x code length (see vdsh_numba/stages.py)."""
from vdsh_numba.cli import train

if __name__ == "__main__":
    train()
