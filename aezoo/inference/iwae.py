"""Importance weighted autoencoder bound, particles vectorised.

``IWAE_K(x) = E[log (1/K) sum_k p(x, z_k) / q(z_k | x)]``, ``z_k ~ q(z | x)``, per datum; the
loss is its negative mean over the minibatch. Gradients use the standard reparameterised
estimator, so every latent site of the guide must be reparameterisable; all latents must be
local (inside the ``"data"`` plate). K = 1 is the ELBO.

References:
    1. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.importance import log_weights
from aezoo.inference.loop import GradientEngine


def iwae_bound(log_w: Tensor) -> Tensor:
    """Per-datum IWAE bound ``(B,)`` from log-weights ``(K, B)``: logsumexp over K minus log K."""
    return log_w.logsumexp(0) - math.log(log_w.shape[0])


@dataclass(frozen=True)
class IWAE(GradientEngine):
    """IWAE bound maximisation; ``loss`` is the negative bound in nats per datum.

    Attributes:
        num_particles: importance samples ``K`` per datum.
    """

    num_particles: int = 5

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        return -iwae_bound(log_weights(ae, *batch, num_particles=self.num_particles, num_data=num_data)).mean()

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        tr = prune_subsample_sites(poutine.trace(ae.guide).get_trace(*batch))
        bad = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["fn"].has_rsample]
        if bad:
            raise ValueError(f"the iwae engine needs reparameterised guide sites; {bad} are not (use --engine svi)")


ENGINE = IWAE
