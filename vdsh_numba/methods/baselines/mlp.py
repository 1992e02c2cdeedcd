"""The MLP every deep baseline trains: forward/backward passes, Adam, and the training loop.

Network (``depth`` hidden layers of ``width`` ReLU units, linear output of ``bits``)::

    a_0 = x
    a_1 = relu(a_0 W_1 + b_1)
    a_l = relu(a_{l-1} W_l + b_l)                 plain,      l = 2..depth
    a_l = a_{l-1} + relu(a_{l-1} W_l + b_l)       residual,   l = 2..depth (equal widths)
    u   = a_depth W_out + b_out

``depth = 0`` is a linear map. The first hidden layer is never residual (its input is the
feature vector, of another width). Parameters are a flat list
``[W_1, b_1, ..., W_depth, b_depth, W_out, b_out]`` with ``W`` of shape ``(fan_in, fan_out)``.
Matrix products go to BLAS through numpy; there is nothing for a compiled loop to add there.

A deep baseline subclasses :class:`DeepHashingModel` and implements ``_batch_loss``: given the
network outputs ``U`` of a minibatch it returns the loss and ``dLoss/dU`` (plus gradients of
any extra parameters of its own, e.g. a classifier). The loop, Adam, the history and saving
are shared here.
"""
from __future__ import annotations

import numpy as np

from ..base import HashingModel, label_matrix
from ._common import ParamsMixin, check_nonnegative, check_positive

__all__ = ["init_mlp", "mlp_forward", "mlp_backward", "Adam", "DeepHashingModel"]


def init_mlp(n_in: int, depth: int, width: int, bits: int, rng, residual: bool = False) -> list:
    """He-normal hidden layers (std sqrt(2/fan_in)), output layer std sqrt(1/fan_in), zero biases.

    ``residual``: the residual branches (hidden layers 2..depth) start at He-normal scaled by
    ``1/depth``. With unit-scale He branches ``a + relu(W a)`` doubles the second moment of the
    activations at every layer (2^15 at depth 16: the tanh code relaxation saturates and
    training collapses to chance, measured for every learning rate tried). The branch output
    ``relu(W a)`` is nonnegative, like ``a``, so its mean adds up across layers: a ``1/sqrt(depth)``
    scale (Hayou et al., "Stable ResNet", AISTATS 2021, for zero-mean branches) still grew the
    moment ~4000x at depth 64, ``1/depth`` keeps it within a small constant at any depth. Fixup
    (Zhang et al., ICLR 2019) and SkipInit (De & Smith, NeurIPS 2020) start branches at or near
    zero for the same reason, as the ADMM VDSH does with ``W = 0``.
    """
    params = []
    fan_in = n_in
    for layer in range(depth):
        scale = 1.0 / depth if _is_residual(layer, residual) else 1.0
        params.append(rng.standard_normal((fan_in, width)) * (scale * np.sqrt(2.0 / fan_in)))
        params.append(np.zeros(width))
        fan_in = width
    params.append(rng.standard_normal((fan_in, bits)) * np.sqrt(1.0 / fan_in))
    params.append(np.zeros(bits))
    return params


def _is_residual(layer: int, residual: bool) -> bool:
    # layer counts hidden layers from 0; the first (features -> width) is never residual
    return residual and layer > 0


def mlp_forward(params: list, X: np.ndarray, residual: bool = False):
    """Forward pass. Returns ``(U, cache)``; ``cache`` holds what :func:`mlp_backward` needs
    (the input of every layer and the ReLU masks)."""
    depth = len(params) // 2 - 1
    acts, masks = [X], []
    a = X
    for l in range(depth):
        z = a @ params[2 * l] + params[2 * l + 1]
        m = z > 0
        h = np.where(m, z, 0.0)
        a = a + h if _is_residual(l, residual) else h
        acts.append(a)
        masks.append(m)
    U = a @ params[-2] + params[-1]
    return U, (acts, masks)


def mlp_backward(params: list, cache, dU: np.ndarray, residual: bool = False) -> list:
    """Gradients of the loss w.r.t. every parameter, given ``dU = dLoss/dU``; same order as
    ``params``."""
    acts, masks = cache
    depth = len(params) // 2 - 1
    grads = [None] * len(params)
    grads[-2] = acts[-1].T @ dU
    grads[-1] = dU.sum(axis=0)
    da = dU @ params[-2].T
    for l in range(depth - 1, -1, -1):
        dz = np.where(masks[l], da, 0.0)
        grads[2 * l] = acts[l].T @ dz
        grads[2 * l + 1] = dz.sum(axis=0)
        if l > 0:
            da_in = dz @ params[2 * l].T
            da = da_in + da if _is_residual(l, residual) else da_in
    return grads


class Adam:
    """Adam (Kingma & Ba 2015, Algorithm 1) updating a list of arrays in place."""

    def __init__(self, params: list, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params: list, grads: list) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        for p, g, m, v in zip(params, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


class DeepHashingModel(ParamsMixin, HashingModel):
    """Shared minibatch/Adam training of an MLP hash function (subclasses give the loss).

    Subclasses implement ``_batch_loss(U, idx) -> (loss, dU, extra_grads)`` where ``idx`` are
    the minibatch's training-row indices, and may override ``_setup(X, Y, rng)`` (called once
    before training, after the network is initialised), ``_epoch_start(epoch, X)`` and
    ``_extra_params()`` (arrays optimised by Adam alongside the network) /
    ``_extra_state()``/``_load_extra(d)`` for saving them.
    Per-epoch mean minibatch loss goes to ``history_`` as ``{"iteration": epoch, "loss": ...}``.
    """

    #: whether the method needs single-label targets
    single_label = False

    def __init__(self, bits, depth=2, width=256, residual=False, epochs=30, batch_size=128,
                 lr=1e-3, weight_decay=0.0, seed=0):
        self.bits = bits
        self.depth = depth
        self.width = width
        self.residual = residual
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    # --- hooks --------------------------------------------------------------
    def _setup(self, X, Y, rng):
        pass

    def _epoch_start(self, epoch, X):
        pass

    def _extra_params(self) -> list:
        return []

    def _extra_state(self) -> dict:
        return {}

    def _output_units(self) -> int:
        """Units of the network's last layer (``bits``; a classifier: the classes of ``_Y``)."""
        return self.bits

    def _batch_loss(self, U, idx):  # pragma: no cover
        raise NotImplementedError

    # --- shared -------------------------------------------------------------
    def _validate(self):
        check_nonnegative("depth", self.depth, integer=True)
        check_positive("width", self.width, integer=True)
        check_positive("epochs", self.epochs, integer=True)
        check_positive("batch_size", self.batch_size, integer=True)
        check_positive("lr", self.lr)
        check_nonnegative("weight_decay", self.weight_decay)
        if not isinstance(self.residual, (bool, np.bool_)):
            raise ValueError(f"residual must be true or false, got {self.residual!r}")

    def net_forward(self, X):
        """Network outputs ``U`` of ``X`` (float64), no validation."""
        return mlp_forward(self.params_, X, self.residual)[0]

    def _fit(self, X, y):
        self._validate()
        if self.single_label and y.ndim != 1:
            raise ValueError(f"{self.method_name} needs single-label y (1-D class ids), "
                             f"got a multi-label matrix of shape {y.shape}")
        rng = np.random.default_rng(self.seed)
        n = X.shape[0]
        self._y = y
        self._Y = label_matrix(y)
        self.params_ = init_mlp(X.shape[1], self.depth, self.width, self._output_units(), rng,
                                self.residual)
        self._setup(X, self._Y, rng)
        extra = self._extra_params()
        opt = Adam(self.params_ + extra, lr=self.lr)
        n_batches = max(1, n // self.batch_size)
        for epoch in range(self.epochs):
            self._epoch_start(epoch, X)
            total = 0.0
            for idx in np.array_split(rng.permutation(n), n_batches):
                U, cache = mlp_forward(self.params_, X[idx], self.residual)
                loss, dU, dextra = self._batch_loss(U, idx)
                grads = mlp_backward(self.params_, cache, dU, self.residual)
                if self.weight_decay:
                    for k in range(0, len(grads), 2):  # weights only, not biases
                        grads[k] = grads[k] + self.weight_decay * self.params_[k]
                opt.step(self.params_ + extra, grads + list(dextra))
                total += float(loss) * idx.size
            self.history_.append({"iteration": epoch, "loss": total / n})
        del self._y, self._Y

    def _project(self, X):
        return self.net_forward(X)

    def _state(self) -> dict:
        d = {f"param_{k}": p for k, p in enumerate(self.params_)}
        d.update(self._extra_state())
        return d

    def _set_state(self, d: dict) -> None:
        self.n_features_in_ = int(d.pop("n_features_in_"))
        keys = sorted((k for k in d if k.startswith("param_")), key=lambda k: int(k[6:]))
        self.params_ = [np.asarray(d.pop(k), dtype=np.float64) for k in keys]
        for k, v in d.items():
            setattr(self, k, v)
