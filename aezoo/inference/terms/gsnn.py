"""The GSNN term of the conditional VAE's hybrid objective: decode from the prior, score the data.

"Learning Structured Output Representations using Deep Conditional Generative Models" (Sohn, Lee
& Yan, NeurIPS 2015), Sec. 3.2 and eq. 9: a conditional VAE is trained with the recognition
network q(z | x, c) but predicts with the prior network p(z | c); the Gaussian stochastic neural
network (GSNN) objective ``E_{p(z | c)}[log p(x | z, c)]`` trains for that prediction, and the
hybrid objective is ``alpha * ELBO + (1 - alpha) * GSNN``. This term's value is
``-E_{p(z | c)}[log p(x | z, c)]`` per datum (``particles`` prior draws, reparameterised), so the
``svi`` loss ``-ELBO + penalty_weight * value`` is the negative hybrid objective times
``1 + penalty_weight`` with ``alpha = 1 / (1 + penalty_weight)``; ``penalty_weight = 1`` is
``alpha = 0.5``. It applies to any model whose latents the model itself can draw
reparameterised (``cvae``'s prior network p(z | c); for a VAE with a fixed N(0, I) prior it trains
the decoder only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.inference.terms import Term
from aezoo.traces import trace_pair


@dataclass(frozen=True)
class GSNN(Term):
    """``-E_{p(z | c)}[log p(x | z, c)]`` per datum.

    Attributes:
        particles: prior draws per datum (>= 1).
    """

    site: ClassVar[str | None] = None
    particles: int = 1

    def __post_init__(self) -> None:
        if self.particles < 1:
            raise ValueError(f"gsnn particles must be at least 1, got {self.particles}")

    def check(self, ae, *batch: Tensor) -> None:
        tr = prune_subsample_sites(poutine.trace(ae.model).get_trace(*batch))
        bad = [n for n, s in tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
               and not s["infer"].get("is_auxiliary") and not s["fn"].has_rsample]
        if bad:
            raise ValueError(f"the penalty GSNN does not apply to {ae.name}: it draws the latents from the model, "
                             f"and {bad} cannot be drawn reparameterised")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        tr = trace_pair(ae, *batch, num_particles=self.particles, guide=False, num_data=num_data)
        return -tr.log_prob(tr.model, tr.observed).mean()
