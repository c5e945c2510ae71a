"""The entropic optimal-transport (Sinkhorn) cost between the aggregate posterior q(z) and the prior p(z).

Over a minibatch, the ``B`` codes ``z_b ~ q(z | x_b)`` (the guide's reparameterised draws) and ``M``
prior draws ``z'_m ~ p(z)`` are two uniform empirical measures. The term is the transport cost of
their entropic coupling ([2], [3])::

    P_eps = argmin_{P in U(1/B, 1/M)} <P, C> - eps H(P),      C_bm = c(z_b, z'_m)
    value = <P_eps, C>                                        (the "sharp" Sinkhorn cost)

with ``c`` the squared (or plain) Euclidean distance; ``value -> W_c`` of the two empirical measures
as ``eps -> 0`` (``W_2^2`` for the squared cost). The entropic plan of a sample with itself is
not the identity, so ``value(q, q) > 0``; ``debiased=true`` subtracts the self-transport terms,
``value - (S(q, q) + S(p, p)) / 2``, the Sinkhorn divergence of [3], 0 for equal samples. Neither
removes the sampling bias: two independent ``B``-point samples of one distribution are ``W_2^2``
apart by an amount that grows with ``D_z`` (exact ``W_2^2`` about 68 for ``B = 100`` draws of
N(0, I_50), about 4.6 for N(0, I_8)). POT's log-domain Sinkhorn [4] computes ``P_eps``
with torch tensors, and the gradient reaches the encoder by automatic differentiation through the
iterations. With ``beta = 0`` and the VAE's pair, the ``svi`` engine's objective is the coupled
VAE's [1] (see :mod:`aezoo.models.coupled_vae`). Particles (``(K, B, D_z)`` draws) are coupled
one by one and averaged.

References:
    1. Coupled Variational Autoencoder, Hao & Shafto, ICML 2023, arXiv:2306.02565.
    2. Sinkhorn Distances: Lightspeed Computation of Optimal Transport, Cuturi, arXiv:1306.0895.
    3. Learning Generative Models with Sinkhorn Divergences, Genevay, Peyre & Cuturi, arXiv:1706.00292.
    4. POT: Python Optimal Transport, Flamary et al., JMLR 22(78), 2021.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import ot
import torch
from torch import Tensor

from aezoo.inference.terms import Term
from aezoo.inference.terms.mmd import prior_draw

COSTS = {"sqeuclidean": "sqeuclidean", "euclidean": "euclidean"}


def sinkhorn_cost(q: Tensor, p: Tensor, epsilon: float, cost: str = "sqeuclidean", iterations: int = 200) -> Tensor:
    """``<P_eps, C>`` between the uniform empirical measures of ``q`` and ``p`` (differentiable).

    Args:
        q: ``(B, D)`` points; p: ``(M, D)`` points.
        epsilon: the entropic regularisation (> 0), in units of the cost.
        cost: ``"sqeuclidean"`` or ``"euclidean"``.
        iterations: the most Sinkhorn iterations (log domain; stops earlier at POT's default threshold).

    Returns:
        The scalar transport cost of the entropic coupling.

    Raises:
        ValueError: ``q`` and ``p`` not 2-d with one event size, or an unknown cost.
    """
    if q.dim() != 2 or p.dim() != 2 or q.shape[-1] != p.shape[-1]:
        raise ValueError(f"sinkhorn_cost needs (B, D) and (M, D) points, got {tuple(q.shape)} and {tuple(p.shape)}")
    if cost not in COSTS:
        raise ValueError(f"unknown sinkhorn cost {cost!r}; choose one of {tuple(COSTS)}")
    c = ot.dist(q, p, metric=COSTS[cost])
    a, b = q.new_full((len(q),), 1 / len(q)), q.new_full((len(p),), 1 / len(p))
    with warnings.catch_warnings():  # an unconverged small-eps plan is still a coupling's cost; no warning
        warnings.simplefilter("ignore")
        plan = ot.sinkhorn(a, b, c, epsilon, method="sinkhorn_log", numItermax=iterations)
    return (plan * c).sum()


@dataclass(frozen=True)
class Sinkhorn(Term):
    """The entropic-OT cost ``<P_eps, C>`` between the minibatch's codes and ``M`` prior draws.

    Attributes:
        epsilon: the entropic regularisation (> 0), in the cost's units (``D_z``-dimensional squared
            distances between N(0, I) draws are about ``2 D_z``).
        cost: ``"sqeuclidean"`` (``W_2^2`` as ``eps -> 0``) or ``"euclidean"`` (``W_1``).
        prior_samples: the number ``M`` of prior draws; 0: as many as codes in the minibatch.
        iterations: the most Sinkhorn iterations per step.
        debiased: subtract the codes' and the prior draws' self-transport costs (the Sinkhorn divergence [3]).
    """

    epsilon: float = 0.5
    cost: str = "sqeuclidean"
    prior_samples: int = 0
    iterations: int = 200
    debiased: bool = False

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ValueError(f"the sinkhorn epsilon must be a positive number, got {self.epsilon}")
        if self.cost not in COSTS:
            raise ValueError(f"unknown sinkhorn cost {self.cost!r}; choose one of {tuple(COSTS)}")
        if self.prior_samples < 0 or self.iterations < 1:
            raise ValueError(f"sinkhorn prior_samples must be >= 0 and iterations >= 1, got {self.prior_samples} "
                             f"and {self.iterations}")

    def __call__(self, ae, batch, num_data, prior, posterior) -> Tensor:
        q = posterior["value"]
        m = self.prior_samples or q.shape[-2]
        draws = torch.cat([prior_draw(prior).expand(q.shape) for _ in range(math.ceil(m / q.shape[-2]))], dim=-2)
        q, p = q.reshape(-1, *q.shape[-2:]), draws[..., :m, :].reshape(-1, m, q.shape[-1])
        return torch.stack([self.cost_between(qk, pk) for qk, pk in zip(q, p)]).mean()

    def cost_between(self, q: Tensor, p: Tensor) -> Tensor:
        """The term for one particle's codes ``q`` ``(B, D_z)`` and prior draws ``p`` ``(M, D_z)``."""
        value = sinkhorn_cost(q, p, self.epsilon, self.cost, self.iterations)
        if not self.debiased:
            return value
        return value - 0.5 * (sinkhorn_cost(q, q, self.epsilon, self.cost, self.iterations)
                              + sinkhorn_cost(p, p, self.epsilon, self.cost, self.iterations))
