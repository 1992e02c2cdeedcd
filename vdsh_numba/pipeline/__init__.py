"""The DVC pipeline, one module per stage, each with a ``run`` function:
download -> features -> train -> encode -> evaluate -> report.

Data flows one way: ``data/raw.npz`` -> ``data/features.npz`` -> ``models/<method>_<bits>.npz`` ->
``codes/<method>_<bits>.npz`` -> ``reports/eval/<method>_<bits>.json`` -> ``reports/metrics.json``.
Every ``run`` takes the validated params dictionary (and the method and code length where the
stage runs per item) and a :class:`~vdsh_numba.pipeline.layout.Layout` saying where its files
are; every output is written atomically (temp file + rename), and every input is checked before
any output is written: a refused input leaves the stage's outputs as they were.
``pipeline/*.py`` (the DVC commands) and the ``vdsh`` command are thin wrappers; each stage's
dvc.yaml entry names its own module and the library modules it uses, so an edit reruns only the
stages it can change.
"""
from . import download, encode, evaluate, features, report, train
from .check import check_data
from .common import say
from .layout import Layout

__all__ = ["Layout", "download", "features", "train", "encode", "evaluate", "report",
           "check_data", "say"]
