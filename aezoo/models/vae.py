"""Variational autoencoder: Gaussian latent, MLP decoder, amortized diagonal-Normal guide.

Generative story, for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = N(mu(x_b), diag sigma(x_b)^2) from an encoder network (amortized).

The default is the one-stochastic-layer MLP of [2]: 784-200-200-50 with tanh. ``network="conv"``
swaps in convolutional encoder and decoder (:class:`aezoo.nn.ConvEncoder`, stride-2 4x4
convolutions with ``channels``, then ``hidden_dims``) for images of ``image_shape``;
``flow_layers=K`` makes the guide an inverse autoregressive flow (:class:`aezoo.guides.AmortizedIAF`).

References:
    1. Auto-Encoding Variational Bayes, Kingma & Welling, arXiv:1312.6114.
    2. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder
from aezoo.guides import AmortizedIAF, AmortizedNormal
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.nn import NETWORKS, decoder_network, encoder_network


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    z_dim: int = 50
    hidden_dims: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    network: str = "mlp"  # one of aezoo.nn.NETWORKS
    image_shape: tuple[int, ...] | None = None  # (H, W) for network="conv"; image data sets set it
    channels: tuple[int, ...] = (32, 64)  # conv channels, each layer halving the image
    flow_layers: int = 0  # > 0: an IAF guide (aezoo.guides.AmortizedIAF) with this many transforms

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.network not in NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of {NETWORKS}")
        if self.flow_layers < 0:
            raise ValueError(f"flow_layers must be non-negative, got {self.flow_layers}")

    def guide(self, site: str = "z"):
        """The amortized Gaussian guide on ``site``, or the IAF guide when ``flow_layers > 0``."""
        if self.flow_layers:
            return AmortizedIAF(site, self.encoder(2 * self.z_dim), self.z_dim, self.flow_layers)
        return AmortizedNormal(site, self.encoder(2 * self.z_dim))

    def no_flow(self, name: str) -> None:
        """``ValueError`` for ``flow_layers > 0`` in an entry whose guide is not the Gaussian one."""
        if self.flow_layers:
            raise ValueError(f"{name} has its own guide; flow_layers applies to the entries with the Gaussian guide "
                             "(vae, info_vae)")

    def encoder(self, out_dim: int):
        """The encoder ``D_x -> out_dim`` this config names (MLP or conv)."""
        return encoder_network(self.network, self.x_dim, self.hidden_dims, out_dim, self.activation, self.image_shape,
                               self.channels)

    def decoder(self, in_dim: int):
        """The decoder ``in_dim -> D_x`` this config names (MLP or conv)."""
        return decoder_network(self.network, in_dim, self.hidden_dims, self.x_dim, self.activation, self.image_shape,
                               self.channels)


class Model(PyroModule):
    """p(z) p(x | z) with a decoder network; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = cfg.decoder(cfg.z_dim)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_dist(x))
            pyro.sample("x", self.x_dist(z), obs=x)

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The prior N(0, I) with event shape ``(D_z,)``."""
        return dist.Normal(x.new_zeros(self.cfg.z_dim), 1.0).to_event(1)

    def x_dist(self, z: Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, D_z)``; event shape ``(D_x,)``."""
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, self.decoder(z), scale)

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)


def build(cfg: Config = Config(), name: str = __name__.rsplit(".", 1)[-1]) -> Autoencoder:
    """A VAE with the encoder ``D_x -> hidden_dims -> 2 D_z`` (after the convolutions with ``network="conv"``)
    and the mirrored decoder.

    ``name`` is the registry key; zoo entries built on this pair (``info_vae``) pass their own.
    """
    return Autoencoder(Model(cfg), cfg.guide(), cfg, name=name)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model (seeded), fit for its likelihood."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            return (model.x_dist(torch.randn(n, cfg.z_dim)).sample(),)
