"""Combining unimodal Gaussian experts q_m(z | x_m) into one multimodal posterior q(z | X).

Three aggregations, each over the experts of the modalities a datum has (``present``):

- product of experts, with the prior expert N(0, I) (MVAE [1]): the Gaussian with precision
  ``1 + sum_m sigma_m^-2`` and mean ``sum_m sigma_m^-2 mu_m / precision`` (:func:`product_of_experts`);
- mixture of experts (MMVAE [2]): ``(1 / M) sum_m q_m(z | x_m)``;
- mixture of products of experts (MoPoE [3]): ``(1 / |S|) sum_{s in S} prod_{m in s} q_m(z | x_m)``
  over the non-empty subsets ``S`` of the present modalities (:func:`subsets`), each product
  without the prior expert, so that its singletons are MMVAE's experts.

The mixtures are :class:`UniformMixture` distributions: uniform over the available components,
reparameterised within the drawn component and stratified over particles, the estimator of [2].

References:
    1. Multimodal Generative Models for Scalable Weakly-Supervised Learning, Wu & Goodman,
       arXiv:1802.05335.
    2. Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models, Shi,
       Siddharth, Paige & Torr, arXiv:1911.03393.
    3. Generalized Multimodal ELBO, Sutter, Daunhawer & Vogt, arXiv:2105.02470.
"""

from __future__ import annotations

import itertools
import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

AGGREGATIONS = ("poe", "moe", "mopoe")


def product_of_experts(loc: Tensor, scale: Tensor, present: Tensor, prior: bool = True) -> tuple[Tensor, Tensor]:
    """The product of the present Gaussian experts (and of N(0, I) with ``prior``), in closed form.

    Args:
        loc, scale: ``(..., M, D)`` means and standard deviations of the experts.
        present: ``(..., M)`` bool; an absent expert has precision 0.
        prior: include the prior expert N(0, I).

    Returns:
        ``(loc, scale)`` of the product, each ``(..., D)``.

    Raises:
        ValueError: without the prior expert, a datum with no present expert (the product is flat).
    """
    precision = scale.pow(-2) * present.unsqueeze(-1).to(scale.dtype)
    total = precision.sum(-2) + (1.0 if prior else 0.0)
    if not prior and not bool(present.any(-1).all()):
        raise ValueError("a product of experts without the prior expert needs at least one present expert per datum")
    return (precision * loc).sum(-2) / total, total.rsqrt()


def subsets(num_modalities: int, singletons_only: bool = False) -> Tensor:
    """The non-empty subsets of ``M`` modalities as rows of a ``(S, M)`` bool matrix (singletons first).

    ``singletons_only`` keeps the ``M`` one-modality subsets (the mixture of experts).
    """
    sizes = (1,) if singletons_only else range(1, num_modalities + 1)
    rows = [[m in chosen for m in range(num_modalities)] for k in sizes
            for chosen in itertools.combinations(range(num_modalities), k)]
    return torch.tensor(rows, dtype=torch.bool)


def mixture_of_products(loc: Tensor, scale: Tensor, present: Tensor, members: Tensor) -> UniformMixture:
    """``(1 / |S|) sum_s prod_{m in s} q_m`` over the subsets ``members`` ``(S, M)`` that lie within ``present``.

    Args:
        loc, scale: ``(B, M, D)`` experts (finite placeholders, e.g. 0 and 1, where absent);
        present: ``(B, M)`` bool.

    Raises:
        ValueError: a datum with no present modality.
    """
    if not bool(present.any(-1).all()):
        raise ValueError("every datum needs at least one present modality (present is all False in some row)")
    available = (present.unsqueeze(-2) | ~members).all(-1)  # (B, S): every member of the subset is present
    s_loc, s_scale = product_of_experts(loc.unsqueeze(-3), scale.unsqueeze(-3), members, prior=False)
    return UniformMixture(s_loc, s_scale, available)


class UniformMixture(dist.TorchDistribution):
    """A uniform mixture of diagonal Normals over each datum's available components.

    ``log q(z) = logsumexp_{c available} log N(z; mu_c, diag sigma_c^2) - log C_avail``. A draw
    picks a component and is reparameterised within it. Under a particles plate (batch dims
    beyond those the mixture was built with, on the left), the ``K`` particles of a datum take
    the components in turn from a random start (stratified sampling, [2]): with ``K`` a multiple
    of the number of components each is drawn equally often, which lowers the variance of the
    ELBO and of the importance-sampling estimate, and every particle is still marginally a draw
    from the mixture, so ``mean_k p(x, z_k) / q(z_k)`` stays unbiased for p(x).

    Args:
        loc, scale: ``(*batch, C, D)``.
        available: ``(*batch, C)`` bool, at least one True per batch element.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, available: Tensor, validate_args=None, data_rank=None) -> None:
        self.loc, self.scale, self.available = loc, scale, available
        self.data_rank = loc.dim() - 2 if data_rank is None else data_rank
        super().__init__(loc.shape[:-2], loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> UniformMixture:
        shape = torch.Size(batch_shape)
        c, d = self.loc.shape[-2:]
        return UniformMixture(self.loc.expand(shape + (c, d)), self.scale.expand(shape + (c, d)),
                              self.available.expand(shape + (c,)), False, self.data_rank)

    @property
    def mean(self) -> Tensor:
        weights = self.available.to(self.loc.dtype)
        return (weights.unsqueeze(-1) * self.loc).sum(-2) / weights.sum(-1, keepdim=True)

    def component_log_prob(self, value: Tensor) -> Tensor:
        """``(*batch, C)`` log N(value; mu_c, sigma_c), -inf for unavailable components."""
        lp = dist.Normal(self.loc, self.scale).log_prob(value.unsqueeze(-2)).sum(-1)
        return lp.masked_fill(~self.available, -math.inf)

    def log_prob(self, value: Tensor) -> Tensor:
        count = self.available.sum(-1).to(value.dtype)
        return self.component_log_prob(value).logsumexp(-1) - count.log()

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        available = self.available.expand(shape + self.available.shape[-1:])
        count = available.sum(-1)
        if len(shape) > self.data_rank:  # stratified over the leftmost (particle) dim, from a random start
            start = torch.floor(torch.rand(shape[1:], device=count.device) * count[0]).long()
            step = torch.arange(shape[0], device=count.device).reshape((-1,) + (1,) * (len(shape) - 1))
            rank = (start + step) % count
        else:
            rank = torch.floor(torch.rand(shape, device=count.device) * count).long()
        chosen = available & (available.long().cumsum(-1) - 1 == rank.unsqueeze(-1))  # one-hot (*shape, C)
        index = chosen.long().argmax(-1, keepdim=True).unsqueeze(-1).expand(*shape, 1, self.loc.shape[-1])
        loc = self.loc.expand(shape + self.loc.shape[-2:]).gather(-2, index).squeeze(-2)
        scale = self.scale.expand(shape + self.scale.shape[-2:]).gather(-2, index).squeeze(-2)
        return loc + scale * torch.randn_like(loc)
