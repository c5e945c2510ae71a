"""Variational graph autoencoder: per-node Gaussian latents, inner-product decoder, GCN guide.

Generative story, for each graph b of the ``"data"`` plate (``V`` nodes)::

    z_b ~ N(0, I)                                         z: (B, V, D_z), one D_z vector per node
    x_b,ij | z_b ~ Bernoulli(sigmoid(z_b,i . z_b,j))      x: (B, V, V) symmetric 0/1, each pair i < j once

The pairs outside ``mask_b`` are left out (:class:`aezoo.likelihoods.InnerProductGraph`).

Guide: q(z_b | adjacency_b, features_b) = prod_i N(mu_i, diag sigma_i^2) with ``(mu, sigma)`` from a
two-layer GCN on the normalised adjacency D^-1/2 (A + I) D^-1/2 (:class:`aezoo.nn.GCN`; the heads share
the first layer; sigma through a softplus, the zoo's convention, where [1] exponentiates log sigma).

Covariates (in call order ``(x, features, adjacency, mask)``, each optional):

- ``features`` ``(B, V, F)``: node features, ``F = num_features``; None: the identity ``I_V``
  (the featureless case of [1]), which needs ``num_features`` unset.
- ``adjacency`` ``(B, V, V)`` (kind ``graph``): the graph the encoder sees; None: ``x``. For link
  prediction it is the training graph, so that held-out edges never reach the encoder
  (:func:`aezoo.data.graphs.link_split`).
- ``mask`` (bool, ``x``'s shape): the node pairs that count; None: all.

``reweight="paper"`` replaces the log-likelihood by the weighted cross-entropy of [1] (edges weighted
by ``n_non_edges / n_edges``, all pairs by ``norm``): the loss of the paper, but no longer a
log-likelihood, so the ELBO is no bound on log p(x). ``negatives=m`` estimates the likelihood from
all edges and ``m`` sampled pairs per edge (unbiased; a random log-density, so evaluate likelihoods
with ``negatives=0``). ``sparse=True`` runs the GCN on a ``torch.sparse`` adjacency. Defaults are
the paper's (hidden 32, D_z = 16, Adam with learning rate 0.01 for 200 epochs: ``DEFAULT_ENGINE``).

References:
    1. Variational Graph Auto-Encoders, Kipf & Welling, arXiv:1611.07308.
    2. Semi-Supervised Classification with Graph Convolutional Networks, Kipf & Welling, arXiv:1609.02907.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor

from aezoo.checks import check_sizes, integer
from aezoo.core import Autoencoder, Covariate
from aezoo.guides import loc_scale
from aezoo.likelihoods import REWEIGHTS, InnerProductGraph, check_adjacency, check_mask
from aezoo.nn import GCN, normalized_adjacency

COVARIATES = (
    Covariate("features", "continuous", doc="node features (B, V, num_features); None: identity features"),
    Covariate("adjacency", "graph", doc="the graph the encoder sees (B, V, V); None: x"),
    Covariate("mask", "mask", doc="node pairs of x that count; None: all"),
)
DEFAULT_ENGINE = ("svi", {"lr": 0.01, "epochs": 200})


@dataclass(frozen=True)
class Config:
    num_nodes: int = 34  # V (the karate club's); data sets set it
    num_features: int | None = None  # F; None: identity features (featureless graphs)
    z_dim: int = 16
    hidden_dims: tuple[int, ...] = (32,)
    activation: str = "relu"
    reweight: str = "none"  # one of aezoo.likelihoods.REWEIGHTS; "paper": the weighted loss of [1], not a likelihood
    negatives: int = 0  # > 0: negative sampling, this many sampled pairs per edge
    sparse: bool = False  # the GCN on a torch.sparse adjacency

    def __post_init__(self) -> None:
        check_sizes(self)
        integer("negatives", self.negatives, minimum=0)
        if self.reweight not in REWEIGHTS:
            raise ValueError(f"unknown reweight {self.reweight!r}; choose one of {REWEIGHTS}")

    @property
    def in_dim(self) -> int:
        """The width of the node features the GCN reads: ``num_features``, or ``V`` for identity features."""
        return self.num_features or self.num_nodes


class Model(PyroModule):
    """p(z) p(x | z) with the inner-product decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: Tensor, features: Tensor | None = None, adjacency: Tensor | None = None,
                mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_dist(x))
            pyro.sample("x", self.x_dist(z, mask), obs=x)

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The prior N(0, I) with event shape ``(V, D_z)``."""
        return dist.Normal(x.new_zeros(self.cfg.num_nodes, self.cfg.z_dim), 1.0).to_event(2)

    def x_dist(self, z: Tensor, mask: Tensor | None = None) -> InnerProductGraph:
        """p(x | z) for ``z`` ``(..., B, V, D_z)``; event shape ``(V, V)``."""
        return InnerProductGraph(z, mask, self.cfg.reweight, self.cfg.negatives)

    def validate(self, x: Tensor, features: Tensor | None = None, adjacency: Tensor | None = None,
                 mask: Tensor | None = None) -> None:
        """``ValueError`` for data that do not fit: ``x`` or ``adjacency`` not binary symmetric ``(B, V, V)``,
        features of the wrong shape or missing under ``num_features``, a bad mask."""
        cfg = self.cfg
        check_adjacency(x, cfg.num_nodes, "the graphs x")
        check_mask(mask, x)
        if adjacency is not None:
            check_adjacency(adjacency, cfg.num_nodes, "the covariate 'adjacency'")
        if features is None and cfg.num_features:
            raise ValueError(f"the model has num_features={cfg.num_features} but the covariate 'features' is missing; "
                             "pass node features or set model.num_features=none (identity features)")
        expected = (len(x), cfg.num_nodes, cfg.in_dim)
        if features is not None and (features.shape != expected or not torch.isfinite(features).all()):
            raise ValueError(f"the covariate 'features' must be finite of shape (B, {cfg.num_nodes}, {cfg.in_dim}), "
                             f"got {tuple(features.shape)}; set model.num_features")


class Guide(PyroModule):
    """q(z | adjacency, features) from the GCN; a point mass at its output when ``deterministic`` (``gae``)."""

    def __init__(self, cfg: Config, deterministic: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.deterministic = deterministic
        self.encoder = GCN(cfg.in_dim, cfg.hidden_dims, cfg.z_dim * (1 if deterministic else 2), cfg.activation)

    def encode(self, x: Tensor, features: Tensor | None = None, adjacency: Tensor | None = None) -> Tensor:
        """The GCN output ``(B, V, D_z)`` (point mass) or ``(B, V, 2 D_z)`` (mean, pre-softplus scale)."""
        a = x if adjacency is None else adjacency
        return self.encoder(features, normalized_adjacency(a.to_sparse() if self.cfg.sparse else a))

    def embed(self, x: Tensor, features: Tensor | None = None, adjacency: Tensor | None = None,
              mask: Tensor | None = None) -> Tensor:
        """The node embeddings ``(B, V, D_z)`` for link prediction, called like the guide: the mean of q (its
        point for ``gae``)."""
        out = self.encode(x, features, adjacency)
        return out if self.deterministic else out.chunk(2, -1)[0]

    def forward(self, x: Tensor, features: Tensor | None = None, adjacency: Tensor | None = None,
                mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            out = self.encode(x, features, adjacency)
            fn = dist.Delta(out) if self.deterministic else dist.Normal(*loc_scale(out))
            pyro.sample("z", fn.to_event(2))


def build(cfg: Config = Config()) -> Autoencoder:
    """A VGAE: the GCN guide ``F -> hidden_dims -> 2 D_z`` per node and the inner-product decoder."""
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x, features, adjacency, mask)``: ``n`` seeded graphs drawn from the prior and the decoder.

    ``features`` are the identity (``num_features`` unset) or standard normal; ``mask`` marks a seeded
    random fifth of the pairs (symmetrically), the pairs that count, and ``adjacency`` is ``x`` without
    their edges: the encoder sees the rest of the graph and the model predicts the marked pairs, as in
    the test split of the graph data sets (:mod:`aezoo.data.graphs`), so link prediction does not leak.
    """
    v = cfg.num_nodes
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = Model(cfg).x_dist(torch.randn(n, v, cfg.z_dim)).sample()
        features = torch.eye(v).expand(n, v, v).clone() if cfg.num_features is None else torch.randn(n, v, cfg.in_dim)
        marked = (torch.rand(n, v, v) < 0.2).triu(1)
        mask = marked | marked.transpose(-1, -2)
        return x, features, x * ~mask, mask
