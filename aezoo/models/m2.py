"""Semi-supervised VAE (M2): a label y and a style z generate x; the guide classifies and encodes.

Generative story, for each datum b of the ``"data"`` plate::

    y_b ~ Categorical(1 / K)                          y: (B,)      observed where labelled
    z_b ~ N(0, I_{D_z})                               z: (B, D_z)
    x_b | y_b, z_b ~ p(x | decoder(z_b, onehot(y_b)))  x: (B, D_x)

Guide: q(y_b | x_b) from a classifier (for the unlabelled data), then q(z_b | x_b, y_b) =
N(mu(x_b, y_b), diag sigma(x_b, y_b)^2) from an encoder of x and the one-hot label (amortized).

The covariate ``y`` follows the optional-covariate contract: when every label is given (``y >= 0``)
it is observed in the model and the guide has no ``y`` site (log p(x, y)); when ``y`` is None it is
a latent the guide proposes from q(y | x) (summed out exactly by ``svi`` with ``elbo=traceenum``,
sampled by importance sampling, which then estimates log p(x)); when some entries are -1
(unlabelled, e.g. ``aezoo fit m2 --labels 100``) both kinds of data share one minibatch: the guide
site of a labelled datum is a point mass at its label (logits 0 there, -1e4 elsewhere, so an
enumerated sum gives it weight 1 and its entropy 0), so the ELBO of a labelled datum is Kingma et
al.'s L(x, y) and that of an unlabelled datum U(x) (eq. 7, 8). The classifier's loss on labelled
data (their alpha term, eq. 9) is the objective term ``classification``
(:mod:`aezoo.inference.terms.classification`).

Defaults: one hidden layer of 500 softplus units, D_z = 50, as in [1]'s MNIST experiments.

References:
    1. Semi-Supervised Learning with Deep Generative Models, Kingma, Rezende, Mohamed & Welling,
       arXiv:1406.5298.
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
from aezoo.likelihoods import check_labels, check_x, x_dist
from aezoo.models import vae
from aezoo.nn import MLP

UNLABELLED = -1
COVARIATES = (Covariate("y", "label", doc="observed where >= 0; -1 or None: unlabelled, proposed by q(y | x)"),)
DEFAULT_ENGINE = ("svi", {"elbo": "traceenum", "penalty": "classification", "penalty_weight": 60.0})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` with [1]'s sizes and ``num_classes`` = K."""

    hidden_dims: tuple[int, ...] = (500,)
    activation: str = "softplus"
    num_classes: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")


def fully_labelled(y: Tensor | None) -> bool:
    """True when ``y`` is given and holds no unlabelled (-1) entry."""
    return y is not None and bool((y >= 0).all())


def with_label(h: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``[h, onehot(y)]`` broadcast over the leading dims of both (enumeration, particles)."""
    onehot = F.one_hot(y.long(), num_classes).to(h.dtype)
    lead = torch.broadcast_shapes(h.shape[:-1], onehot.shape[:-1])
    return torch.cat([h.expand(*lead, h.shape[-1]), onehot.expand(*lead, num_classes)], -1)


class Model(PyroModule):
    """p(y) p(z) p(x | y, z); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = MLP(cfg.z_dim + cfg.num_classes, cfg.hidden_dims[::-1], cfg.x_dim, cfg.activation)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        K = self.cfg.num_classes
        with pyro.plate("data", num_data or len(x), subsample=x):
            prior = dist.Categorical(logits=x.new_zeros(K))
            label = pyro.sample("y", prior, obs=y) if fully_labelled(y) else pyro.sample("y", prior)
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.cfg.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.x_dist(z, label), obs=x)

    def x_dist(self, z: Tensor, y: Tensor) -> dist.Distribution:
        """p(x | y, z) for ``z`` ``(..., B, D_z)`` and labels ``y`` broadcastable to ``(..., B)``."""
        out = self.decoder(with_label(z, y, self.cfg.num_classes))
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, out, scale)

    def validate(self, x: Tensor, y: Tensor | None = None) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)
        if y is not None:
            check_labels(y, self.cfg.num_classes, "m2", unlabelled=True)


class Guide(PyroModule):
    """q(y | x) (unlabelled data) and q(z | x, y); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.classifier = MLP(cfg.x_dim, cfg.hidden_dims, cfg.num_classes, cfg.activation)
        self.encoder = MLP(cfg.x_dim + cfg.num_classes, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation)

    def label_logits(self, x: Tensor) -> Tensor:
        """Logits of q(y | x), ``(B, K)``."""
        return self.classifier(x)

    def forward(self, x: Tensor, y: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            if fully_labelled(y):
                label = y
            else:
                logits = self.label_logits(x)
                if y is not None:  # labelled data: a point mass at the label (see the module docstring)
                    known = F.one_hot(y.clamp_min(0), self.cfg.num_classes).to(x.dtype) * 1e4 - 1e4
                    logits = torch.where((y >= 0).unsqueeze(-1), known, logits)
                label = pyro.sample("y", dist.Categorical(logits=logits))
            pyro.sample("z", diagonal_normal(self.encoder(with_label(x, label, self.cfg.num_classes))))


def build(cfg: Config = Config()) -> Autoencoder:
    """M2 with classifier ``D_x -> hidden_dims -> K``, encoder ``D_x + K -> hidden_dims -> 2 D_z`` and decoder
    ``D_z + K -> hidden_dims -> D_x``."""
    cfg.no_flow("m2")
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


@torch.no_grad()
def classify(ae: Autoencoder, x: Tensor) -> Tensor:
    """The most probable label under q(y | x): ``(B,)`` int64."""
    return ae.guide.label_logits(x).argmax(-1)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``n`` draws of a randomly initialised model with uniform labels (seeded); every fourth
    label is hidden (-1), as in semi-supervised data."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        y = torch.randint(cfg.num_classes, (n,))
        with torch.no_grad():
            x = model.x_dist(torch.randn(n, cfg.z_dim), y).sample()
        return x, torch.where(torch.arange(n) % 4 == 3, UNLABELLED, y)
