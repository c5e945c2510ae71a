"""Variational lossy autoencoder: a VAE whose prior is an autoregressive flow.

Generative story, for each datum b of the ``"data"`` plate::

    e_b ~ N(0, I_{D_z}),  z_b = f_K o ... o f_1(e_b)           z: (B, D_z)   the prior p(z), a flow
    x_b | z_b ~ p(x | decoder(z_b))                            x: (B, D_x)   ``vae``'s decoder and likelihoods

with ``f_k`` the inverses of Pyro's ``AffineAutoregressive`` transforms (each an ``AutoRegressiveNN``): an
autoregressive flow (AF), whose density ``log p(z) = log N(f^-1(z)) + log |det d f^-1 / dz|`` takes one
parallel pass (what training and importance sampling need) while drawing from it takes ``D_z``
sequential passes. An autoregressive-flow prior is as expressive
as an inverse-autoregressive-flow guide with a Gaussian prior [1, Sec. 3], and it lowers the cost
of coding z. Guide: q(z_b | x_b) = N(mu(x_b), diag sigma(x_b)^2) (amortized). The KL term has no
closed form (Monte Carlo). [1] pairs this prior with a local (small receptive field) PixelCNN
decoder to make the code lossy; here the decoder is ``vae``'s MLP, so the code carries what the
decoder needs globally, and the measurable effect is the KL the code pays against a plain VAE.

References:
    1. Variational Lossy Autoencoder, Chen, Kingma, Salimans, Duan, Dhariwal, Schulman, Sutskever &
       Abbeel, arXiv:1611.02731.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import AutoRegressiveNN
from torch import Tensor, nn

from aezoo.core import Autoencoder
from aezoo.models import vae


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` plus the prior flow: ``prior_flows`` transforms of ``prior_hidden`` units."""

    z_dim: int = 32
    prior_flows: int = 2
    prior_hidden: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prior_flows < 1 or self.prior_hidden < 1:
            raise ValueError(f"prior_flows and prior_hidden must be positive, got {self.prior_flows} and "
                             f"{self.prior_hidden}")


class Model(vae.Model):
    """The flow prior over z and ``vae``'s decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.flows = nn.ModuleList(T.AffineAutoregressive(AutoRegressiveNN(cfg.z_dim, [cfg.prior_hidden]))
                                   for _ in range(cfg.prior_flows))

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The flow prior p(z), event shape ``(D_z,)``."""
        base = dist.Normal(x.new_zeros(self.cfg.z_dim), 1.0).to_event(1)
        return dist.TransformedDistribution(base, [t.inv for t in self.flows])  # AF: parallel density


def build(cfg: Config = Config()) -> Autoencoder:
    """The VLAE with ``vae``'s encoder and Gaussian guide."""
    cfg.no_flow("vlae")  # the flow is in the prior here; use vae with flow_layers for a flow guide
    return Autoencoder(Model(cfg), cfg.guide(), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model (seeded), fit for its likelihood."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            return (model.x_dist(model.z_dist(torch.zeros(1)).sample((n,))).sample(),)
