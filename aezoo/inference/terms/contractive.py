"""The contractive penalty: the squared Frobenius norm of the encoder's Jacobian, per datum.

"Contractive Auto-Encoders: Explicit Invariance During Feature Extraction" (Rifai, Vincent,
Muller, Glorot & Bengio, ICML 2011), eq. 3: ``||J_f(x)||_F^2 = sum_{j,i} (d h_j / d x_i)^2`` for the
code ``h = f(x)``, added with weight lambda to the reconstruction error. For one sigmoid layer
``h = sigmoid(W x + b)`` it has the closed form (eq. 4) ``sum_j (h_j (1 - h_j))^2 sum_i W_ji^2``
(:func:`sigmoid_layer_norm`); any other encoder gets the exact norm from ``D_z`` batched
vector-Jacobian products (:func:`jacobian_norm`, ``torch.autograd.grad`` with ``is_grads_batched``),
differentiable in the encoder's parameters (``create_graph``).

The term reads the guide's ``encode(x) -> z`` ``(B, D_z)`` (deterministic guides: ``cae``, ``dae``,
``wae``, ...); for a Gaussian guide it does not apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from aezoo.inference.terms import Term

METHODS = ("auto", "autograd", "sigmoid")


def jacobian_norm(encode, x: Tensor, create_graph: bool = True) -> Tensor:
    """``||d encode(x_b) / d x_b||_F^2`` ``(B,)`` for ``x`` ``(B, D_x)`` and ``encode`` ``(B, D_x) -> (B, D_z)``.

    ``encode`` must treat data independently (no batch statistics), so that the gradient of
    ``z[:, j].sum()`` with respect to ``x`` is row ``j`` of every datum's Jacobian.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = encode(x)
        if z.dim() != 2 or z.shape[0] != x.shape[0]:
            raise ValueError(f"the contractive penalty needs codes of shape (B, D_z) = ({x.shape[0]}, D_z), got "
                             f"{tuple(z.shape)}")
        basis = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)[:, None, :].expand(-1, *z.shape)
        (rows,) = torch.autograd.grad(z, x, basis, create_graph=create_graph, is_grads_batched=True)
    return rows.pow(2).sum((0, 2))  # rows: (D_z, B, D_x)


def sigmoid_layer_norm(h: Tensor, weight: Tensor) -> Tensor:
    """[1]'s eq. 4 ``sum_j (h_j (1 - h_j))^2 ||W_j||^2`` ``(B,)`` for codes ``h`` ``(B, D_z)``, ``W`` ``(D_z, D_x)``."""
    return (h * (1 - h)).pow(2) @ weight.pow(2).sum(1)


def sigmoid_layer(encoder: nn.Module) -> nn.Linear | None:
    """The ``Linear`` of an encoder that is exactly ``Linear`` then ``Sigmoid`` (nested ``Sequential``s allowed)."""
    layers = [m for m in encoder.modules() if not isinstance(m, nn.Sequential)]
    if len(layers) == 2 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.Sigmoid):
        return layers[0]
    return None


@dataclass(frozen=True)
class Contractive(Term):
    """``||J_encoder(x)||_F^2`` per datum, averaged over the minibatch.

    Attributes:
        method: ``"sigmoid"`` (closed form, one sigmoid layer only), ``"autograd"`` (any encoder) or
            ``"auto"`` (the closed form where it applies).
    """

    site: ClassVar[str | None] = None
    method: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown contractive method {self.method!r}; choose one of {METHODS}")

    def check(self, ae, *batch: Tensor) -> None:
        encoder = getattr(ae.guide, "encoder", None)
        fits = batch[0].dim() == 2 and hasattr(ae.guide, "encode")
        code = ae.guide.encode(batch[0][:2]) if fits else None
        if not isinstance(code, Tensor) or code.dim() != 2 or code.shape[0] != min(2, len(batch[0])):
            raise ValueError(f"the penalty Contractive does not apply to {ae.name}: it needs a deterministic guide "
                             "with encode(x) -> z of shape (B, D_z) for x of shape (B, D_x) (e.g. cae, dae, wae)")
        if self.method == "sigmoid" and (encoder is None or sigmoid_layer(encoder) is None):
            raise ValueError(f"contractive method 'sigmoid' needs an encoder of one Linear and a Sigmoid; {ae.name}'s "
                             "is not (use method=autograd)")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        x = batch[0]
        layer = sigmoid_layer(ae.guide.encoder) if self.method != "autograd" else None
        if layer is not None:
            return sigmoid_layer_norm(ae.guide.encode(x), layer.weight).mean()
        return jacobian_norm(ae.guide.encode, x).mean()
