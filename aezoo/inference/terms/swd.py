"""The sliced-Wasserstein penalty between the aggregate posterior q(z) and the prior p(z): SWAE.

``SW_2^2`` between the guide's draws of ``z`` for the minibatch and as many prior draws, over
random directions, per particle, averaged ([1]; with ``beta = 0`` and a Delta guide, the
objective of the sliced-Wasserstein autoencoder).

References:
    1. Sliced-Wasserstein Autoencoder: An Embarrassingly Simple Generative Model, Kolouri, Pope,
       Martin & Rohde, arXiv:1804.01947.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aezoo.inference.penalties import sliced_wasserstein
from aezoo.inference.terms import Term
from aezoo.inference.terms.mmd import prior_draw


@dataclass(frozen=True)
class SlicedWasserstein(Term):
    """SW_2^2(q(z), p(z)) with ``projections`` random directions (fresh each step, torch's RNG).

    Attributes:
        projections: the number of directions ``L`` (>= 1).
    """

    projections: int = 50

    def __post_init__(self) -> None:
        if self.projections < 1:
            raise ValueError(f"swd projections must be at least 1, got {self.projections}")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        q = posterior["value"]
        return sliced_wasserstein(q, prior_draw(prior).expand(q.shape), self.projections).mean()
