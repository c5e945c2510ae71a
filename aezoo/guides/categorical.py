"""Categorical latents: one-hot sites, the amortized categorical guide, and their Gumbel-softmax relaxations.

A model with ``D`` categorical latents of ``K`` classes states them as one site of one-hot codes
``(B, D, K)``: :func:`one_hot` of logits ``(..., D, K)``, ``OneHotCategorical`` with event shape
``(D, K)``. That is the probability model every diagnostic scores (importance sampling sums over
codes, not over points of the simplex). The relaxation is an objective-side device: an engine
swaps a one-hot site's distribution for :func:`relaxed` of it at a temperature ``tau`` (see
:mod:`aezoo.inference.terms.temperature`), in the model and the guide alike.

:class:`GumbelSoftmax` is Pyro's ``RelaxedOneHotCategorical``, the Gumbel-softmax [1] / Concrete [2]
density on the simplex, ``p_tau(y) = (K - 1)! tau^(K-1) prod_k (pi_k y_k^(-tau-1)) / (sum_k pi_k y_k^-tau)^K``,
drawn as ``y = softmax((logits + g) / tau)`` with Gumbel noise ``g``.
:class:`GumbelSoftmaxStraightThrough` returns ``one_hot(argmax y)`` forward and the gradient of
``y`` backward ([1], Sec. 2.2), and scores the relaxed ``y`` behind its draw. Between two of them
``kl_divergence`` is registered as **the KL of their categorical distributions**,
``sum_k q_k log(q_k / p_k)`` with ``q = softmax(q.logits)``, ``p = softmax(p.logits)``: the term of
[1]'s and [3]'s objective, which is the exact KL of the discrete model, not of the relaxed densities
(which has no closed form). ``TraceMeanField_ELBO`` (``svi`` with ``analytic_kl``) and the capacity
objective use it; a Monte Carlo KL (``analytic_kl=False``) scores the relaxed densities instead,
the ELBO of the relaxed model [2].

References:
    1. Categorical Reparameterization with Gumbel-Softmax, Jang, Gu & Poole, arXiv:1611.01144.
    2. The Concrete Distribution: A Continuous Relaxation of Discrete Random Variables, Maddison,
       Mnih & Teh, arXiv:1611.00712.
    3. Learning Disentangled Joint Continuous and Discrete Representations, Dupont, arXiv:1804.00104.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, kl_divergence, register_kl


class GumbelSoftmax(dist.RelaxedOneHotCategorical):
    """Pyro's ``RelaxedOneHotCategorical(temperature, logits=...)``; its KL to another is the categorical KL."""


class GumbelSoftmaxStraightThrough(dist.RelaxedOneHotCategoricalStraightThrough, GumbelSoftmax):
    """Pyro's straight-through relaxation: one-hot draws forward, the relaxed draw's gradient backward."""


@register_kl(GumbelSoftmax, GumbelSoftmax)
def _categorical_kl(q: GumbelSoftmax, p: GumbelSoftmax) -> Tensor:
    """KL(Cat(softmax(q.logits)) || Cat(softmax(p.logits))), batch shape; temperatures play no part."""
    return kl_divergence(Categorical(logits=q.logits), Categorical(logits=p.logits))


def one_hot(logits: Tensor) -> dist.Distribution:
    """``D`` independent one-hot categoricals from logits ``(..., D, K)``: event shape ``(D, K)``."""
    return dist.OneHotCategorical(logits=logits).to_event(1)


def relaxed(fn: dist.Distribution, temperature: float, straight_through: bool = False) -> dist.Distribution | None:
    """The Gumbel-softmax relaxation at ``temperature`` of a one-hot site's distribution, or None for any other.

    Args:
        fn: a site's distribution; ``OneHotCategorical``, possibly inside ``Independent`` wrappers, is relaxed.
        temperature: ``tau > 0``.
        straight_through: :class:`GumbelSoftmaxStraightThrough` instead of :class:`GumbelSoftmax`.

    Returns:
        The relaxation with ``fn``'s logits, batch and event shapes, or None when ``fn`` is not one-hot.
    """
    dims = 0
    while isinstance(fn, Independent):
        dims += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    if not isinstance(fn, dist.OneHotCategorical):
        return None
    family = GumbelSoftmaxStraightThrough if straight_through else GumbelSoftmax
    out = family(fn.logits.new_tensor(temperature), logits=fn.logits)
    return out.to_event(dims) if dims else out


def is_one_hot(fn: dist.Distribution) -> bool:
    """True for a ``OneHotCategorical`` site distribution, also inside ``Independent`` wrappers."""
    return relaxed(fn, 1.0) is not None


class AmortizedOneHot(PyroModule):
    """q(site_b | x_b) = prod_d Cat(softmax(logits_d(x_b))): ``D`` one-hot categoricals from an encoder.

    Args:
        site: the latent site it proposes, e.g. ``"z"``; values ``(B, D, K)``.
        encoder: network ``(..., D_x) -> (..., D * K)``.
        num_latents: ``D``; num_classes: ``K``.
    """

    def __init__(self, site: str, encoder: nn.Module, num_latents: int, num_classes: int) -> None:
        super().__init__()
        self.site = site
        self.encoder = encoder
        self.shape = (num_latents, num_classes)

    def encode(self, x: Tensor) -> Tensor:
        """Logits ``(B, D, K)``."""
        return self.encoder(x).unflatten(-1, self.shape)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, one_hot(self.encode(x)))
