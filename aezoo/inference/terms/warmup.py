"""KL warm-up: the weight of the ELBO's KL term grows linearly from 0 over the first epochs.

``beta_e = beta * min(1, e / epochs)`` at training progress ``e`` (epochs done, fractional within
an epoch, published by the shared loop; see :func:`aezoo.inference.objectives.at_epoch`), so
``beta_e = beta`` once ``e >= epochs``, without warm-up (``epochs = 0``) and outside a fit [1, 2].

References:
    1. Generating Sentences from a Continuous Space, Bowman et al., arXiv:1511.06349.
    2. Ladder Variational Autoencoders, Sønderby, Raiko, Maaløe, Sønderby & Winther, arXiv:1602.02282.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.progress import ramp
from aezoo.traces import guide_sites


@dataclass(frozen=True)
class KLWarmup:
    """The warm-up schedule of the KL weight.

    Attributes:
        epochs: epochs over which the weight grows from 0 to ``beta`` (a non-negative integer; 0: none).
    """

    epochs: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 0):
            raise ValueError(f"kl_warmup_epochs must be a non-negative integer, got {self.epochs!r}")

    def weight(self, beta: float) -> float:
        """``beta_e`` at the current training progress (``beta`` outside a fit)."""
        return beta * ramp(self.epochs)

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` when warming up from 0 meets a non-reparameterised guide site (its score term vanishes)."""
        if self.epochs and not all(s["fn"].has_rsample for s in guide_sites(ae, *batch).values()):
            raise ValueError("svi with kl_warmup_epochs needs reparameterised guide sites (rsample): masking the "
                             "latent terms would drop their score-function gradients")
