"""The capacity-controlled beta-VAE objective: pull each datum's KL towards a growing capacity C.

``-E_q[log p(x | z)] + gamma * |KL(q(z | x) || p(z)) - C_e|`` per datum, with ``C_e =
capacity_max * min(1, e / epochs)`` nats at training progress ``e`` [1]. The KL of each datum
(closed form with ``analytic_kl`` where registered, else ``log q(z) - log p(z)`` at the draw,
averaged over the particles) comes from one trace of guide and model (no score-function terms),
so the objective needs reparameterised guide sites inside the ``"data"`` plate. [1] applies
``|.|`` to the minibatch-mean KL; here it applies per datum, so the loss estimates the
objective's mean over the data whatever the batch size.

References:
    1. Understanding disentangling in beta-VAE, Burgess, Higgins, Pal, Matthey, Watters,
       Desjardins & Lerchner, arXiv:1804.03599.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.objectives import elbo_terms, ramp
from aezoo.traces import data_dim, guide_sites, trace_pair


def capacity_loss(rec: Tensor, kl: Tensor, capacity: float, gamma: float) -> Tensor:
    """Negative capacity objective of [1] per datum, averaged over the ``K`` particles and ``B`` data.

    Args:
        rec: ``(K, B)`` reconstruction log-likelihoods, nats.
        kl: ``(K, B)`` KL terms, nats; averaged over particles before the absolute value.
        capacity: ``C`` in nats.
        gamma: the weight of the capacity term.
    """
    return -rec.mean() + gamma * (kl.mean(0) - capacity).abs().mean()


@dataclass(frozen=True)
class Capacity:
    """The objective's settings.

    Attributes:
        capacity_max: the final capacity ``C`` (nats, >= 0).
        epochs: epochs over which ``C`` grows linearly from 0 (0: constant).
        gamma: the weight (> 0) of ``|KL - C|`` (1000 in [1]).
        analytic_kl: closed-form KL terms where registered.
    """

    capacity_max: float
    epochs: int = 0
    gamma: float = 1000.0
    analytic_kl: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.capacity_max < float("inf"):
            raise ValueError(f"capacity_max must be non-negative and finite, got {self.capacity_max}")
        if not (isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 0):
            raise ValueError(f"capacity_epochs must be a non-negative integer, got {self.epochs!r}")
        if not 0 < self.gamma < float("inf"):
            raise ValueError(f"gamma must be positive and finite, got {self.gamma}")

    def capacity(self) -> float:
        """``C_e`` in nats at the current training progress (``capacity_max`` outside a fit)."""
        return self.capacity_max * ramp(self.epochs)

    def loss(self, ae: Autoencoder, *batch: Tensor, num_particles: int, num_data: int):
        """The negative objective per datum and the traces it used (for penalties on the same draws)."""
        tr = trace_pair(ae, *batch, num_particles=num_particles, num_data=num_data)
        return capacity_loss(*elbo_terms(tr, self.analytic_kl), self.capacity(), self.gamma), tr

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` for non-reparameterised guide sites or a latent outside the ``"data"`` plate."""
        sites = guide_sites(ae, *batch)
        if not all(s["fn"].has_rsample for s in sites.values()):
            raise ValueError("svi with capacity_max needs reparameterised guide sites (rsample)")
        for name, site in sites.items():
            data_dim(name, site)  # ValueError for a global latent: its KL is not per datum
