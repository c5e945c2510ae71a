"""The Koopman VAE's linearity and spectral terms on a learned transition operator.

"Generative Modeling of Regular and Irregular Time Series Data via Koopman VAEs" (Naiman,
Erichson, Ren, Mahoney & Azencot, arXiv:2310.02619) trains a GRU prior whose latent path should
follow one linear map ``A``: its loss adds the prediction error ``|| z_t - A z_{t-1} ||^2`` and, to
prescribe the dynamics' stability, a penalty on ``A``'s eigenvalues ``lambda_i``. This term is::

    pred_weight * mean_{b,t} || z_bt - A(dt_bt) z_b,t-1 ||^2  +  eig_weight * L_eig(|lambda|)

on the guide's draw ``z`` (the model's ``residual(z, t)``), with the spectrum of the one-step
operator ``A = expm(G)`` read from the generator's eigenvalues ``mu`` (``|lambda| = exp(Re mu)``,
which is exact and differentiable, :func:`torch.linalg.eigvals`). ``L_eig`` is, by ``mode``:

- ``"bound"``: ``sum_i relu(|lambda_i| - radius)^2``: zero exactly when every ``|lambda_i| <=
  radius`` (stable dynamics for ``radius = 1``; then stable for every gap ``dt``, as ``|lambda|^dt``).
- ``"target"``: ``sum over the `num_modes` largest |lambda_i| of (|lambda_i| - radius)^2``: that many
  modes pinned near the circle of that radius ([1]'s constraint with ``radius = 1``: periodic,
  non-decaying modes).

The term reads the guide's sample at site ``z`` and needs a model with ``residual(z, t)`` and a
``generator`` ``(D_z, D_z)`` (``koopman_vae``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from aezoo.inference.terms import Term

MODES = ("bound", "target")


def eigenvalue_moduli(generator: Tensor) -> Tensor:
    """``(D_z,)`` the moduli ``|lambda_i| = exp(Re mu_i)`` of ``expm(G)``'s eigenvalues, ``mu`` those of ``G``."""
    return torch.linalg.eigvals(generator).real.exp()


def spectral_penalty(moduli: Tensor, mode: str = "bound", radius: float = 1.0, num_modes: int = 1) -> Tensor:
    """``L_eig`` of the module docstring for eigenvalue moduli ``(D_z,)``; a scalar >= 0.

    Raises:
        ValueError: unknown ``mode``.
    """
    if mode == "bound":
        return F.relu(moduli - radius).pow(2).sum()
    if mode == "target":
        return (moduli.topk(min(num_modes, len(moduli))).values - radius).pow(2).sum()
    raise ValueError(f"unknown koopman mode {mode!r}; choose one of {MODES}")


@dataclass(frozen=True)
class Koopman(Term):
    """Prediction error of the linear transition plus the spectral penalty on its eigenvalues.

    Attributes:
        pred_weight: weight (>= 0) of the mean squared prediction error per latent step.
        eig_weight: weight (>= 0) of the spectral penalty.
        mode: ``"bound"`` (moduli at most ``radius``) or ``"target"`` (``num_modes`` largest near ``radius``).
        radius: the bound or target modulus (> 0).
        num_modes: how many modes ``"target"`` pins (>= 1).
    """

    site: ClassVar[str | None] = "z"
    pred_weight: float = 1.0
    eig_weight: float = 1.0
    mode: str = "bound"
    radius: float = 1.0
    num_modes: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown koopman mode {self.mode!r}; choose one of {MODES}")
        if not (self.pred_weight >= 0 and self.eig_weight >= 0 and self.radius > 0 and self.num_modes >= 1):
            raise ValueError("koopman pred_weight and eig_weight must be >= 0, radius > 0 and num_modes >= 1; got "
                             f"{self.pred_weight}, {self.eig_weight}, {self.radius}, {self.num_modes}")

    def check(self, ae, *batch: Tensor) -> None:
        if not (hasattr(ae.model, "residual") and hasattr(ae.model, "generator")):
            raise ValueError(f"the penalty Koopman does not apply to {ae.name}: it needs a sequence model with a "
                             "Koopman generator and residual(z, t) (e.g. koopman_vae)")

    def spectral(self, ae) -> Tensor:
        """The spectral penalty alone (a scalar, differentiable in the generator)."""
        return spectral_penalty(eigenvalue_moduli(ae.model.generator), self.mode, self.radius, self.num_modes)

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        t = batch[2] if len(batch) > 2 else None
        pred = ae.model.residual(posterior["value"], t).pow(2).sum(-1).mean()
        return self.pred_weight * pred + self.eig_weight * self.spectral(ae)
