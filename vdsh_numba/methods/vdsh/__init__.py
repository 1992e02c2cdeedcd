"""VDSH: the estimator, its one training engine and the backends' array operations.

* :mod:`.estimator` -- :class:`VDSH` (hyperparameters, fit/project, save/load), ``TRAIN_DEFAULTS``;
* :mod:`.engine` -- the sweep loop (update order, penalty schedule, checkpoint/resume, divergence
  guard, final refit, history rows), written once for every backend;
* :mod:`.cpu_ops` / :mod:`.cuda_ops` -- twin modules of array operations (same names, same
  signatures): numpy/BLAS + :mod:`vdsh_numba.methods.vdsh.admm`, and cuBLAS/numba.cuda + :mod:`vdsh_numba.methods.vdsh.gpu_admm`;
* :mod:`.solves` -- the closed-form host solves and the initialisation; :mod:`.checkpoint`.
"""
from .engine import TrainingDiverged
from .estimator import TRAIN_CHOICES, TRAIN_DEFAULTS, TRAIN_MINIMUM, VDSH, backend_ops, check_train, forward
from .solves import objective_terms

__all__ = ["VDSH", "TRAIN_DEFAULTS", "TRAIN_CHOICES", "TRAIN_MINIMUM", "check_train", "TrainingDiverged", "backend_ops", "forward", "objective_terms"]
