"""VAE with a VampPrior: the prior is the mixture of the guide at K learned pseudo-inputs.

Generative story, for each datum b of the ``"data"`` plate::

    u_k = sigmoid(pseudo_k), k = 1..K                          u: (K, D_x)   learned pseudo-inputs in (0, 1)
    z_b ~ p(z) = (1 / K) sum_k q(z | u_k)                       z: (B, D_z)   mixture of the guide's Normals
    x_b | z_b ~ p(x | decoder(z_b))                             x: (B, D_x)

Guide: q(z_b | x_b) = N(mu(x_b), diag sigma(x_b)^2) from the encoder (amortized), the same
network that defines the prior's components [1] (so the prior's gradient reaches it). The KL
term has no closed form and is estimated by Monte Carlo (Pyro falls back to it).

Defaults follow [1]'s MNIST set-up: K = 500 pseudo-inputs, D_z = 40, two hidden layers of 300
gated units (:class:`aezoo.nn.GatedLinear`) in encoder and decoder, static MNIST (``--binarize
static``). The gated layers matter here: with tanh layers the model collapses on MNIST within an
epoch (0 active units). A constant encoder costs no KL under this prior (the prior's components
follow the encoder wherever it goes), so nothing holds the codes near zero: they drift to one large
constant (mean |mu| 3.3 after two epochs of 10,000 images), the decoder's first tanh layer
saturates and stops passing a gradient; the linear path of a gated unit does not saturate (39 of
40 units active on the same budget). Reference: test NLL 85.57 (VampPrior) vs 88.56 (standard prior) [1].

References:
    1. VAE with a VampPrior, Tomczak & Welling, arXiv:1705.07120.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from aezoo.core import Autoencoder
from aezoo.guides import AmortizedNormal
from aezoo.models import vae


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` with the paper's sizes and ``num_pseudo`` = K."""

    z_dim: int = 40
    hidden_dims: tuple[int, ...] = (300, 300)
    activation: str = "gated"
    num_pseudo: int = 500  # a size: checked (>= 1) by vae.Config's check_sizes


class Mixture(dist.MixtureSameFamily):
    """``MixtureSameFamily`` whose support is its components' (torch 2.13 wraps it in a constraint that has
    no registered bijection, which MCMC engines and Pyro's autoguides need)."""

    @property
    def support(self):
        return self._component_distribution.support


class Model(vae.Model):
    """The VampPrior over z and ``vae``'s decoder and likelihoods; see the module docstring."""

    def __init__(self, cfg: Config, posterior: AmortizedNormal) -> None:
        super().__init__(cfg)
        g = torch.Generator().manual_seed(0)
        self.pseudo = nn.Parameter(0.1 * torch.randn(cfg.num_pseudo, cfg.x_dim, generator=g))
        self._posterior = [posterior]  # a list: the guide owns the encoder's parameters

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The mixture ``(1/K) sum_k q(z | u_k)`` with event shape ``(D_z,)``."""
        loc, scale = self._posterior[0].encode(torch.sigmoid(self.pseudo).to(x.dtype))
        return Mixture(dist.Categorical(logits=loc.new_zeros(len(loc))), dist.Normal(loc, scale).to_event(1))


def build(cfg: Config = Config()) -> Autoencoder:
    """The VampPrior VAE with the encoder ``D_x -> hidden_dims -> 2 D_z`` shared by guide and prior."""
    cfg.no_flow("vamp_vae")  # the prior's components are the Gaussian guide's
    guide = AmortizedNormal("z", cfg.encoder(2 * cfg.z_dim))
    return Autoencoder(Model(cfg, guide), guide, cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model (seeded), fit for its likelihood."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ae = build(cfg)
        with torch.no_grad():
            z = ae.model.z_dist(torch.zeros(1)).sample((n,))
            return (ae.model.x_dist(z).sample(),)
