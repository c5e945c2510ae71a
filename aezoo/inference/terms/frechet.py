"""The Fréchet (2-Wasserstein) penalty between each datum's Gaussian posterior and N(0, I): the UAE.

For q(z | x_b) = N(mu_b, diag sigma_b^2) and the prior N(0, I) the squared 2-Wasserstein
(Fréchet) distance has the closed form ([1]; [2] for Gaussians)::

    W_2^2 = ||mu_b||^2 + tr(Sigma_b + I - 2 Sigma_b^{1/2}) = ||mu_b||^2 + sum_j (sigma_bj - 1)^2

averaged over the minibatch. The Unscented Autoencoder [3] uses it on the per-datum posterior in
place of the KL: with ``beta = 0`` in the ``svi`` engine the KL is dropped and ``penalty_weight``
is the weight of this term. It reads the guide's ``encode(x) -> (loc, scale)`` (the Gaussian
guides, :class:`aezoo.guides.AmortizedNormal` and :class:`aezoo.guides.unscented.SigmaPointGuide`),
not a site's draws, so it is exact rather than sampled.

References:
    1. The Fréchet distance between multivariate normal distributions, Dowson & Landau, J. Multivariate
       Analysis 1982.
    2. A class of Wasserstein metrics for probability distributions, Givens & Shortt, Michigan Math. J. 1984.
    3. Unscented Autoencoder, Janjoš, Rosenbaum, Dolgov & Zöllner, arXiv:2306.05256.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from aezoo.inference.terms import Term


def w2_squared(loc: Tensor, scale: Tensor, prior_loc: Tensor | float = 0.0,
               prior_scale: Tensor | float = 1.0) -> Tensor:
    """``W_2^2(N(loc, diag scale^2), N(prior_loc, diag prior_scale^2))`` ``(...)`` for ``(..., D)`` inputs."""
    return ((loc - prior_loc) ** 2 + (scale - prior_scale) ** 2).sum(-1)


@dataclass(frozen=True)
class Frechet(Term):
    """The per-datum ``W_2^2(q(z | x), N(0, I))``, averaged over the minibatch (no options)."""

    site: ClassVar[str | None] = None

    def check(self, ae, *batch: Tensor) -> None:
        encode = getattr(ae.guide, "encode", None)
        out = encode(batch[0]) if encode is not None else None
        if not (isinstance(out, tuple) and len(out) == 2 and out[0].shape == out[1].shape
                and out[0].shape[:-1] == batch[0].shape[:1]):
            raise ValueError(f"the penalty Frechet does not apply to {ae.name}: it needs a Gaussian guide whose "
                             "encode(x) returns the mean and standard deviation, each (B, D_z)")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        loc, scale = ae.guide.encode(batch[0])
        return w2_squared(loc, scale).mean()
