"""How a stage is started, from DVC (``pipeline/<stage>.py``) or from the ``vdsh`` command:
params validated first, ``--method``/``--bits`` checked against them, a refused input reported
as one ``error:`` line with exit status 2 and nothing written."""
from __future__ import annotations

import argparse
import sys

from .params import ParamsError, load_params

__all__ = ["run_stage", "stage_main", "check_item", "REFUSED"]

#: the exceptions that mean "bad input" (one error line, exit 2), not a crash
REFUSED = (ParamsError, FileNotFoundError, ValueError, TypeError, MemoryError)


def check_item(p, method, bits):
    """``--method``/``--bits`` must be one of params.yaml's (the stages' outputs are named by them)."""
    if method not in p["methods"]:
        raise ParamsError(f"--method {method!r} is not one of params.yaml's methods {list(p['methods'])}")
    if bits not in p["bits"]:
        raise ParamsError(f"--bits {bits} is not one of params.yaml's bits {list(p['bits'])}")


def run_stage(fn, params_file, *args):
    """Validate params (and ``--method``/``--bits``) before any work, then ``fn(params, *args)``."""
    try:
        p = load_params(params_file)
        if args:
            check_item(p, *args)
        fn(p, *args)
    except REFUSED as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def stage_main(fn, per_item=False, argv=None):
    """The command line of ``pipeline/<stage>.py``: ``[--params FILE] [--method M --bits B]``."""
    ap = argparse.ArgumentParser(description=(fn.__module__ or "").rsplit(".", 1)[-1] + " stage")
    ap.add_argument("--params", default="params.yaml", help="the params file to read")
    if per_item:
        ap.add_argument("--method", required=True, help="hashing method (one of params.yaml's methods)")
        ap.add_argument("--bits", required=True, type=int, help="code length (one of params.yaml's bits)")
    a = ap.parse_args(argv)
    run_stage(fn, a.params, *((a.method, a.bits) if per_item else ()))
