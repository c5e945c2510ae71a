"""Two-stochastic-layer VAE: p(z2) p(z1 | z2) p(x | z1), guide q(z1 | x) q(z2 | z1).

Generative story, for each datum b of the ``"data"`` plate::

    z2_b ~ N(0, I_{D_z2})                                  z2: (B, D_z2)
    z1_b | z2_b ~ N(mu(z2_b), diag sigma(z2_b)^2)          z1: (B, D_z1)   MLP D_z2 -> hidden2 -> 2 D_z1
    x_b | z1_b ~ p(x | decoder(z1_b))                      x: (B, D_x)     MLP D_z1 -> hidden1 -> D_x

Guide: q(z1_b | x_b) q(z2_b | z1_b), diagonal Normals from MLPs ``D_x -> hidden1 -> 2 D_z1`` and
``D_z1 -> hidden2 -> 2 D_z2`` (amortized, bottom-up as in [1]).

The default is the two-stochastic-layer architecture of [1] (Sec. 5): deterministic layers of
200, 200 units below z1 (100 units) and 100, 100 below z2 (50 units), tanh. The model is not
mean field (z1 depends on z2 in the model, z2 on z1 in the guide), so closed-form KL terms do not
apply: the default objective is ``svi`` with ``analytic_kl=False`` (Pyro's ``Trace_ELBO``); the
``iwae`` and ``rws`` engines and the importance-sampled evaluation handle both layers.

References:
    1. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
    2. Ladder Variational Autoencoders, Sønderby, Raiko, Maaløe, Sønderby & Winther, arXiv:1602.02282.
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
from aezoo.guides import diagonal_normal
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.nn import MLP

DEFAULT_ENGINE = ("svi", {"analytic_kl": False})


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    z1_dim: int = 100
    z2_dim: int = 50
    hidden1: tuple[int, ...] = (200, 200)  # between x and z1
    hidden2: tuple[int, ...] = (100, 100)  # between z1 and z2
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")


class Model(PyroModule):
    """p(z2) p(z1 | z2) p(x | z1); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.z1_net = MLP(cfg.z2_dim, cfg.hidden2[::-1], 2 * cfg.z1_dim, cfg.activation)
        self.decoder = MLP(cfg.z1_dim, cfg.hidden1[::-1], cfg.x_dim, cfg.activation)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.cfg.z2_dim), 1.0).to_event(1))
            z1 = pyro.sample("z1", diagonal_normal(self.z1_net(z2)))
            pyro.sample("x", self.x_dist(z1), obs=x)

    def x_dist(self, z1: Tensor) -> dist.Distribution:
        """p(x | z1) for ``z1`` ``(..., B, D_z1)``; event shape ``(D_x,)``."""
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, self.decoder(z1), scale)

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)


class Guide(PyroModule):
    """q(z1 | x) q(z2 | z1), bottom-up; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.z1_net = MLP(cfg.x_dim, cfg.hidden1, 2 * cfg.z1_dim, cfg.activation)
        self.z2_net = MLP(cfg.z1_dim, cfg.hidden2, 2 * cfg.z2_dim, cfg.activation)

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z1 = pyro.sample("z1", diagonal_normal(self.z1_net(x)))
            pyro.sample("z2", diagonal_normal(self.z2_net(z1)))


def build(cfg: Config = Config()) -> Autoencoder:
    """The two-layer VAE with Burda et al.'s architecture by default."""
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a randomly initialised model (seeded), fit for its likelihood."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        with torch.no_grad():
            z1 = diagonal_normal(model.z1_net(torch.randn(n, cfg.z2_dim))).sample()
            return (model.x_dist(z1).sample(),)
