"""k-sparse autoencoder: a linear encoder whose k largest hidden units are kept, a (tied) linear decoder.

Generative story, for each datum b of the ``"data"`` plate, with ``H = D_z`` hidden units::

    z_b ~ Laplace(0, 1)^H                   z: (B, H); sparse coding's prior (unused by the default objective)
    x_b | z_b ~ p(x | W^T z_b + c)          x: (B, D_x); Bernoulli (sigmoid output), continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = delta(z_b - supp_k(W x_b + b)): the linear activations with all but the k
largest set to 0 (:func:`keep_top_k`), a point mass.

``tied=True`` (the paper's choice) makes the decoder's weight the transpose of the encoder's, one
tensor shared by model and guide; ``tied=False`` gives the decoder its own ``(D_x, H)`` weight.
[1] has no prior: its objective is the reconstruction alone, which is ``DEFAULT_ENGINE``'s ``svi``
with ``beta = 0`` (the latent terms masked, as for ``wae``): ``-log p(x | z = encoder(x))`` per
datum. [1] uses the squared error of a linear output; here the output goes through the zoo's
likelihoods (logits for binary data). The Laplace prior makes the pair a generative model, that of
sparse coding, whose encoder estimates the support of the code as [1]'s sec. 2.2 argues;
``hmc``/``nuts`` sample its p(z | x) (dense codes, not the encoder's); ``iwae``/``rws`` do not apply
(point mass).

k schedule ([1], sec. 3.3): training starts with ``k_start`` units (100) so every unit learns,
and k falls linearly to the target ``k`` over the first ``k_schedule_epochs`` epochs (half of
``DEFAULT_ENGINE``'s 10), read from the loop's progress (:func:`aezoo.core.ramp`),
so a resumed fit continues it; outside a fit k is the target. At test time [1] encodes with
``alpha k`` units, ``alpha >= 1`` (:func:`sparse_codes`). :func:`dead_latents` names the units
never among the top k on the data. [1] uses ``H = 1000`` and ``k = 25`` on MNIST (1.35% test error
of a classifier on the codes after fine-tuning).

References:
    1. k-Sparse Autoencoders, Makhzani & Frey, arXiv:1312.5663.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes, integer
from aezoo.core import Autoencoder
from aezoo.guides.delta import AmortizedDelta
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.progress import ramp

DEFAULT_ENGINE = ("svi", {"beta": 0.0, "epochs": 10})


@dataclass(frozen=True)
class Config:
    """Attributes:
        x_dim: ``D_x``. z_dim: ``H``, the hidden units.
        k: the target number of units kept per datum (1 <= k <= z_dim).
        k_start: k at the start of training (>= k; values above z_dim mean all units).
        k_schedule_epochs: epochs over which k falls linearly from k_start to k; 0: k throughout.
        tied: the decoder uses the transpose of the encoder's weight.
        likelihood: one of :data:`aezoo.likelihoods.LIKELIHOODS`.
    """

    x_dim: int = 784
    z_dim: int = 1000
    k: int = 25
    k_start: int = 100
    k_schedule_epochs: int = 5
    tied: bool = True
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        check_sizes(self)
        integer("k", self.k)
        integer("k_schedule_epochs", self.k_schedule_epochs, minimum=0)
        if self.k > self.z_dim:
            raise ValueError(f"k must be at most z_dim = {self.z_dim} (the hidden units), got {self.k}")
        if isinstance(self.k_start, bool) or not isinstance(self.k_start, int) or self.k_start < self.k:
            raise ValueError(f"k_start must be an integer >= k = {self.k}, got {self.k_start!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")

    def current_k(self) -> int:
        """k at the loop's progress: ``k_start`` falling linearly to ``k`` (rounded half up); ``k`` outside a fit."""
        start = min(self.k_start, self.z_dim)
        return math.floor(start + (self.k - start) * ramp(self.k_schedule_epochs) + 0.5)


def keep_top_k(h: Tensor, k: int) -> Tensor:
    """``h`` ``(..., H)`` with all but its ``k`` largest entries (per row) set to 0; ties broken by ``topk``, so
    exactly ``k`` entries are kept. The gradient reaches the kept entries only.

    Raises:
        ValueError: ``k`` outside ``[1, H]``.
    """
    if not 1 <= k <= h.shape[-1]:
        raise ValueError(f"k must lie in [1, {h.shape[-1]}], got {k}")
    index = h.topk(k, dim=-1).indices
    return h * torch.zeros_like(h, dtype=torch.bool).scatter(-1, index, True)


def dead_latents(codes: Tensor) -> Tensor:
    """``(H,)`` bool: the units that are 0 for every row of ``codes`` ``(N, H)``; ``.sum()`` is the dead-latent count.

    For top-k codes a unit is 0 exactly when it was not among the k largest (a kept linear activation
    is 0 with probability 0), so these are the units never selected on the data.
    """
    if codes.dim() != 2:
        raise ValueError(f"expected codes of shape (N, H), got {tuple(codes.shape)}")
    return (codes == 0).all(0)


class Guide(AmortizedDelta):
    """q(z | x) = delta(z - supp_k(W x + b)) with k from :meth:`Config.current_k`; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__("z", nn.Linear(cfg.x_dim, cfg.z_dim))
        self.cfg = cfg

    def encode(self, x: Tensor, alpha: float = 1.0) -> Tensor:
        """The sparse code ``(B, H)`` keeping ``min(H, round(alpha k))`` units (``alpha >= 1``; 1 in training)."""
        if not alpha >= 1:
            raise ValueError(f"alpha must be at least 1, got {alpha}")
        return keep_top_k(self.encoder(x), min(self.cfg.z_dim, math.floor(alpha * self.cfg.current_k() + 0.5)))


class Model(PyroModule):
    """The Laplace prior and the linear decoder ``W^T z + c`` (``W`` the encoder's when tied)."""

    def __init__(self, cfg: Config, encoder: nn.Linear) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.tied:
            self.weight = encoder.weight  # (H, D_x), the very tensor of the encoder
        else:
            self.weight = nn.Parameter(torch.empty(cfg.z_dim, cfg.x_dim).uniform_(-1, 1) / cfg.z_dim ** 0.5)
        self.bias = nn.Parameter(torch.zeros(cfg.x_dim))
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_dist(x))
            pyro.sample("x", self.x_dist(z), obs=x)

    def z_dist(self, x: Tensor) -> dist.Distribution:
        """The prior Laplace(0, 1) on each of the ``H`` units, event shape ``(H,)``."""
        return dist.Laplace(x.new_zeros(self.cfg.z_dim), 1.0).to_event(1)

    def x_dist(self, z: Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, H)``; event shape ``(D_x,)``."""
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, z @ self.weight + self.bias, scale)

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)


def build(cfg: Config = Config()) -> Autoencoder:
    """The k-sparse autoencoder: the linear top-k encoder and the (tied) linear decoder."""
    guide = Guide(cfg)
    return Autoencoder(Model(cfg, guide.encoder), guide, cfg, name="k_sparse_ae")


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a random decoder at random k-sparse codes (the top k of ``3 N(0, I)`` draws)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg, nn.Linear(cfg.x_dim, cfg.z_dim))
        with torch.no_grad():
            return (model.x_dist(keep_top_k(3 * torch.randn(n, cfg.z_dim), cfg.k)).sample(),)


@torch.no_grad()
def sparse_codes(ae: Autoencoder, x: Tensor, alpha: float = 1.0, batch_size: int = 1000) -> Tensor:
    """The codes ``(N, H)`` of ``x`` ``(N, D_x)`` with ``alpha k`` units kept (target k; [1]'s test-time encoding)."""
    return torch.cat([ae.guide.encode(chunk, alpha) for chunk in x.split(batch_size)])


__all__ = ["Config", "DEFAULT_ENGINE", "build", "dead_latents", "example_data", "keep_top_k", "sparse_codes"]
