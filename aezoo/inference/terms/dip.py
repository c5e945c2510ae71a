"""DIP-VAE's penalties: push a covariance of the latent codes towards the identity.

``sum_{i != j} C_ij^2 + diag_weight * sum_i (C_ii - 1)^2`` for ``C`` the batch covariance of the
guide means (DIP-VAE-I) or of the aggregate posterior q(z) (DIP-VAE-II: the means' covariance
plus the mean guide covariance), read from the guide's ``mean`` and ``variance`` (or
``covariance_matrix``) at ``z``; no prior draws. [1] suggests ``lambda_d = 10 lambda_od`` for I
and ``lambda_d = lambda_od`` for II: the default ``diag_weight``.

References:
    1. Variational Inference of Disentangled Latent Concepts from Unlabeled Observations, Kumar,
       Sattigeri & Balakrishnan, arXiv:1711.00848.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from aezoo.inference.penalties import dip_covariance_penalty
from aezoo.inference.terms import Term


@dataclass(frozen=True)
class DipI(Term):
    """DIP-VAE-I: the covariance of the guide means.

    Attributes:
        diag_weight: ``lambda_d / lambda_od``, >= 0.
    """

    variant: ClassVar[str] = "i"
    diag_weight: float = 10.0

    def __post_init__(self) -> None:
        if not self.diag_weight >= 0:
            raise ValueError(f"dip diag_weight must be non-negative, got {self.diag_weight}")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        q, fn = posterior["value"], posterior["fn"]
        cov = getattr(fn, "covariance_matrix", None)
        cov = torch.diag_embed(fn.variance) if cov is None else cov
        return dip_covariance_penalty(fn.mean.expand(q.shape), self.variant, 1.0, self.diag_weight,
                                      cov.expand(*q.shape, q.shape[-1])).mean()


@dataclass(frozen=True)
class DipII(DipI):
    """DIP-VAE-II: the covariance of the aggregate posterior q(z); ``diag_weight`` defaults to 1 here."""

    variant: ClassVar[str] = "ii"
    diag_weight: float = 1.0
