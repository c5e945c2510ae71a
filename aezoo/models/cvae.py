"""Conditional VAE: conditional prior p(z | cond), recognition q(z | x, cond), decoder p(x | z, cond).

Generative story, for each datum b of the ``"data"`` plate, with ``cond_b`` the condition::

    cond_b = onehot(y_b) (condition="y", (B, K))  or  c_b (condition="c", (B, D_c))
    z_b | cond_b ~ N(mu_p(cond_b), diag sigma_p(cond_b)^2)    z: (B, D_z)   prior network (an MLP)
    x_b | z_b, cond_b ~ p(x | decoder(z_b, cond_b))          x: (B, D_x)   entries where mask_b is False left out

Guide: q(z_b | x_b, cond_b) = N(mu_q, diag sigma_q^2) from the recognition network (amortized; MLP
or conv on ``x``, the condition joined after the convolutions).

Covariates (in call order ``(x, y, c, mask)``, each optional as in Pyro's ``contrib/cevae``):

- ``y`` (labels in ``[0, num_classes)``): the condition when ``condition="y"``. When ``y`` is None
  the model samples it, ``y_b ~ Categorical(1 / num_classes)``, and so does the guide (the prior
  is its proposal), so importance sampling estimates log p(x) = log E_y p(x | y).
- ``c`` ``(B, D_c)``: the condition when ``condition="c"`` (e.g. the seen quadrants of a digit,
  ``aezoo.data.quadrants``); None raises a ``ValueError`` naming it.
- ``mask`` (bool, ``x``'s shape): the entries of ``x`` to model; None: all of them.

With ``y`` or ``c`` given, the model's log-density is log p(x, z | cond): importance sampling
and the ELBO estimate the conditional log-likelihood log p(x | cond), nats per datum (of the
masked entries). Default objective (``DEFAULT_ENGINE``): the hybrid objective of [1] (eq. 9),
``alpha ELBO + (1 - alpha) GSNN`` with ``alpha = 0.5``, as ``svi`` with the ``gsnn`` term
(:mod:`aezoo.inference.terms.gsnn`; ``penalty_weight = (1 - alpha) / alpha``). The default sizes
are those of Pyro's CVAE example (hidden 500-500, D_z = 200, ReLU).

References:
    1. Learning Structured Output Representation using Deep Conditional Generative Models, Sohn,
       Lee & Yan, NeurIPS 2015.
    2. Semi-Supervised Learning with Deep Generative Models, Kingma, Rezende, Mohamed & Welling,
       arXiv:1406.5298 (the conditional decoder p(x | y, z)).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.core import Autoencoder, Covariate
from aezoo.guides import diagonal_normal
from aezoo.likelihoods import check_labels, check_mask, check_x, x_dist
from aezoo.models import vae
from aezoo.nn import MLP, decoder_network, encoder_network

CONDITIONS = ("y", "c")
COVARIATES = (
    Covariate("y", "label", doc="the condition under condition='y'; sampled from a uniform prior when None"),
    Covariate("c", "continuous", doc="the condition under condition='c'; required there"),
    Covariate("mask", "mask", doc="entries of x that count; None: all"),
)
DEFAULT_ENGINE = ("svi", {"penalty": "gsnn", "penalty_weight": 1.0})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` plus the condition (defaults: Pyro's CVAE example sizes)."""

    z_dim: int = 200
    hidden_dims: tuple[int, ...] = (500, 500)
    activation: str = "relu"
    condition: str = "y"  # "y": labels (one-hot), "c": a continuous vector
    num_classes: int = 10
    c_dim: int = 784

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.condition not in CONDITIONS:
            raise ValueError(f"unknown condition {self.condition!r}; choose one of {CONDITIONS}")
        if self.num_classes < 1 or self.c_dim < 1:
            raise ValueError(f"num_classes and c_dim must be positive, got {self.num_classes} and {self.c_dim}")

    @property
    def cond_dim(self) -> int:
        """The width of the condition vector."""
        return self.num_classes if self.condition == "y" else self.c_dim


def condition(cfg: Config, x: Tensor, y: Tensor | None, c: Tensor | None) -> Tensor:
    """The condition vector ``(B, cond_dim)``: ``onehot(y)`` or ``c``.

    Raises:
        ValueError: ``condition="c"`` and ``c`` is None, or ``y`` is None (call after sampling it).
    """
    if cfg.condition == "y":
        if y is None:
            raise ValueError("cvae with condition='y' needs the covariate 'y' here")
        return F.one_hot(y.long(), cfg.num_classes).to(x.dtype)
    if c is None:
        raise ValueError("cvae with condition='c' needs the covariate 'c' (the condition, (B, c_dim)); the data "
                         "have none: use a data set that provides c (e.g. mnist_q1) or condition='y'")
    return c.reshape(len(x), -1).to(x.dtype)


def labels(cfg: Config, x: Tensor, y: Tensor | None) -> Tensor | None:
    """``y`` as given, or (``condition="y"``) a draw ``y ~ Categorical(1 / num_classes)`` at site ``"y"`` if None."""
    if cfg.condition != "y" or y is not None:
        return y
    return pyro.sample("y", dist.Categorical(logits=x.new_zeros(cfg.num_classes)))


class Model(PyroModule):
    """p(z | cond) p(x | z, cond); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.prior_net = MLP(cfg.cond_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation)
        self.decoder = decoder_network(cfg.network, cfg.z_dim + cfg.cond_dim, cfg.hidden_dims, cfg.x_dim,
                                       cfg.activation, cfg.image_shape, cfg.channels)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, y: Tensor | None = None, c: Tensor | None = None, mask: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            cond = condition(self.cfg, x, labels(self.cfg, x, y), c)
            z = pyro.sample("z", self.z_dist(cond))
            pyro.sample("x", self.x_dist(z, cond, mask), obs=x)

    def z_dist(self, cond: Tensor) -> dist.Distribution:
        """The conditional prior p(z | cond) for ``cond`` ``(..., B, cond_dim)``; event shape ``(D_z,)``."""
        return diagonal_normal(self.prior_net(cond))

    def x_dist(self, z: Tensor, cond: Tensor, mask: Tensor | None = None) -> dist.Distribution:
        """p(x | z, cond) for ``z`` ``(..., B, D_z)``; event shape ``(D_x,)``, entries outside ``mask`` left out."""
        out = self.decoder(torch.cat([z, cond.expand(*z.shape[:-1], cond.shape[-1])], -1))
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, out, scale, mask)

    def validate(self, x: Tensor, y: Tensor | None = None, c: Tensor | None = None, mask: Tensor | None = None) -> None:
        """``ValueError`` for data that do not fit: ``x`` (see :func:`aezoo.likelihoods.check_x`), a missing
        ``c`` under ``condition="c"``, labels outside ``[0, num_classes)``, ``c`` of the wrong width, a bad mask."""
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)
        check_mask(mask, x)
        if self.cfg.condition == "y" and y is not None:
            check_labels(y, self.cfg.num_classes, "cvae")
        if self.cfg.condition == "c":
            cond = condition(self.cfg, x, None, c)
            if cond.shape[-1] != self.cfg.c_dim or not torch.isfinite(cond).all():
                raise ValueError(f"cvae condition 'c' must be finite of shape (B, {self.cfg.c_dim}), got "
                                 f"{tuple(c.shape)}; set model.c_dim")


class Guide(PyroModule):
    """q(z | x, cond) from the recognition network; samples ``y`` from its prior when it is None."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder_network(cfg.network, cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation,
                                       cfg.image_shape, cfg.channels, extra_dim=cfg.cond_dim)

    def forward(self, x: Tensor, y: Tensor | None = None, c: Tensor | None = None, mask: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            cond = condition(self.cfg, x, labels(self.cfg, x, y), c)
            seen = x if mask is None else x * mask
            if self.cfg.network == "mlp":
                out = self.encoder(torch.cat([seen.expand(*cond.shape[:-1], x.shape[-1]), cond], -1))
            else:
                out = self.encoder(seen, cond)
            pyro.sample("z", diagonal_normal(out))


def build(cfg: Config = Config()) -> Autoencoder:
    """A CVAE: prior network ``cond -> hidden_dims -> 2 D_z``, recognition network on ``(x, cond)``,
    decoder ``(z, cond) -> D_x`` (MLP or conv)."""
    cfg.no_flow("cvae")
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x, y, c, mask)``: ``n`` seeded draws of a randomly initialised model given random conditions.

    ``y`` is uniform on the classes, ``c`` standard normal ``(n, c_dim)``; ``mask`` hides a seeded
    random fifth of the entries.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        y = torch.randint(cfg.num_classes, (n,))
        c = torch.randn(n, cfg.c_dim)
        mask = torch.rand(n, cfg.x_dim) > 0.2
        with torch.no_grad():
            cond = condition(cfg, torch.zeros(n, cfg.x_dim), y, c)
            x = model.x_dist(model.z_dist(cond).sample(), cond).sample()
        return x, y, c, mask
