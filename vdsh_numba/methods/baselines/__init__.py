"""Baseline hashing methods; importing this package registers them all.

Classic, on fixed features: ``lsh``, ``itq``, ``sdh``. Deep, on the shared MLP of
:mod:`vdsh_numba.methods.baselines.mlp` (minibatch backprop with Adam): ``dpsh``, ``dtsh``, ``dcwh``,
``tie_ap``, ``classifier`` (a classifier's class -> codeword: the sanity row), ``vdsh_backprop`` (and ``vdsh_backprop_residual``, the same with
identity shortcuts by default). See docs/baselines.md.
"""
from . import lsh, itq, sdh  # noqa: F401
from . import dpsh, dtsh, dcwh, tie_ap, vdsh_backprop, classifier  # noqa: F401
from .lsh import LSH
from .itq import ITQ
from .sdh import SDH
from .dpsh import DPSH
from .dtsh import DTSH
from .dcwh import DCWH
from .tie_ap import TieAP
from .vdsh_backprop import VDSHBackprop, VDSHBackpropResidual
from .classifier import Classifier

__all__ = ["LSH", "ITQ", "SDH", "DPSH", "DTSH", "DCWH", "TieAP", "VDSHBackprop",
           "VDSHBackpropResidual", "Classifier"]
