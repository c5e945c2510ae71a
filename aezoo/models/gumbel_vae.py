"""Categorical VAE: D one-hot latents of K classes under a uniform prior, trained by the Gumbel-softmax relaxation.

Generative story, for each datum b of the ``"data"`` plate::

    z_b ~ prod_d OneHotCategorical(1/K, ..., 1/K)   z: (B, D, K) one-hot codes; D = num_latents, K = num_classes
    x_b | z_b ~ p(x | decoder(flatten z_b))          x: (B, D_x); Bernoulli or continuous Bernoulli

Guide: q(z_b | x_b) = prod_d Cat(softmax(logits_d(x_b))), logits ``(B, D, K)`` from an MLP encoder
(:class:`aezoo.guides.categorical.AmortizedOneHot`).

This is the discrete model, the one the diagnostics score: ``importance_estimate`` gives log p(x) of
it with exact one-hot draws from q. The default engine trains it as [1] does, an objective-side
choice (:mod:`aezoo.inference.terms.temperature`): ``svi`` with ``relaxation="gumbel_softmax"``
relaxes the site in model and guide to Gumbel-softmax draws at a temperature annealed as
``tau_t = max(0.5, exp(-1e-5 t))`` (updated every 500 steps), keeping the KL the closed-form
categorical ``sum_k q_k log(K q_k)`` (``analytic_kl``), so ``loss`` is [1]'s negative ELBO; it is
not a bound on the discrete log p(x) (its reconstruction term is taken at relaxed codes).
``relaxation="straight_through"`` is [1]'s ST Gumbel-softmax (one-hot forward, relaxed gradient);
``svi`` with ``elbo="tracegraph"`` and no relaxation is the score-function estimator on the exact
sites, and ``rws`` the reweighted wake-sleep one. ``iwae`` and MCMC do not apply (no
reparameterisation of a discrete site); ``svi`` with ``elbo="traceenum"`` would sum ``K^D`` codes.

The default network is [1]'s: 784-512-256 with ReLU, 30 variables of 10 classes.

References:
    1. Categorical Reparameterization with Gumbel-Softmax, Jang, Gu & Poole, arXiv:1611.01144.
    2. The Concrete Distribution: A Continuous Relaxation of Discrete Random Variables, Maddison,
       Mnih & Teh, arXiv:1611.00712.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder
from aezoo.guides.categorical import AmortizedOneHot, one_hot
from aezoo.likelihoods import check_x, x_dist
from aezoo.nn import NETWORKS, decoder_network, encoder_network

DEFAULT_ENGINE = ("svi", {"relaxation": "gumbel_softmax",
                          "relaxation_options": ("temperature=0.5", "rate=1e-5", "every=500")})
LIKELIHOODS = ("bernoulli", "continuous_bernoulli")


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    num_latents: int = 30  # D categorical variables
    num_classes: int = 10  # K classes each
    hidden_dims: tuple[int, ...] = (512, 256)
    activation: str = "relu"
    likelihood: str = "bernoulli"  # one of LIKELIHOODS
    network: str = "mlp"  # one of aezoo.nn.NETWORKS
    image_shape: tuple[int, ...] | None = None  # (H, W) for network="conv"
    channels: tuple[int, ...] = (32, 64)

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r} for gumbel_vae; choose one of {LIKELIHOODS}")
        if self.network not in NETWORKS:
            raise ValueError(f"unknown network {self.network!r}; choose one of {NETWORKS}")

    @property
    def code_dim(self) -> int:
        """``D * K``, the decoder's input size."""
        return self.num_latents * self.num_classes


class Model(PyroModule):
    """p(z) p(x | z) with uniform one-hot codes; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = decoder_network(cfg.network, cfg.code_dim, cfg.hidden_dims, cfg.x_dim, cfg.activation,
                                       cfg.image_shape, cfg.channels)

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_dist(x))
            pyro.sample("x", self.x_dist(z), obs=x)

    def z_dist(self, x: Tensor):
        """The uniform prior over one-hot codes, event shape ``(D, K)``."""
        return one_hot(x.new_zeros(self.cfg.num_latents, self.cfg.num_classes))

    def x_dist(self, z: Tensor):
        """p(x | z) for codes ``z`` ``(..., B, D, K)`` (one-hot, or relaxed ones on the simplex); event ``(D_x,)``."""
        return x_dist(self.cfg.likelihood, self.decoder(z.flatten(-2)))

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)


def build(cfg: Config = Config()) -> Autoencoder:
    """A categorical VAE with the encoder ``D_x -> hidden_dims -> D K`` and the mirrored decoder."""
    encoder = encoder_network(cfg.network, cfg.x_dim, cfg.hidden_dims, cfg.code_dim, cfg.activation, cfg.image_shape,
                              cfg.channels)
    guide = AmortizedOneHot("z", encoder, cfg.num_latents, cfg.num_classes)
    return Autoencoder(Model(cfg), guide, cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model (seeded): uniform codes, then x."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            z = model.z_dist(torch.zeros(1)).sample((n,))
            return (model.x_dist(z).sample(),)
