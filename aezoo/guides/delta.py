"""A deterministic amortized guide q(z | x) = delta(z - encoder(x)), the encoder of WAE and SWAE."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from torch import Tensor, nn


class AmortizedDelta(PyroModule):
    """q(site_b | x_b) = delta(site_b - encoder(x_b)): a point mass, ``log q = 0`` at its value.

    Deterministic encoders are what Wasserstein autoencoders use ("Wasserstein Auto-Encoders",
    Tolstikhin et al., arXiv:1711.01558). The point mass is not a density over ``z``: importance
    weights and KL terms against it are meaningless, so engines and diagnostics built on them do
    not apply (see :func:`aezoo.traces.is_deterministic`).

    Args:
        site: the latent site it proposes, e.g. ``"z"``.
        encoder: network ``(..., D_x) -> (..., D_z)``.
    """

    def __init__(self, site: str, encoder: nn.Module) -> None:
        super().__init__()
        self.site = site
        self.encoder = encoder

    def encode(self, x: Tensor) -> Tensor:
        """The code ``(B, D_z)``."""
        return self.encoder(x)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, dist.Delta(self.encode(x)).to_event(1))
