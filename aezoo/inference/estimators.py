"""Gradient-estimator surrogates for the importance-weighted family (IWAE, MIWAE, PIWAE, CIWAE).

A surrogate is a scalar whose value is the negative objective (nats per datum, minibatch mean)
and whose gradient is the chosen estimator: ``loss.backward()`` on it is one training step.
Log-weights arrive as ``(M, K, B)``: ``M`` groups of ``K`` particles for ``B`` data.

Estimators of the gradient of an importance-weighted bound, with ``w~_k`` the normalised
weights of a group of ``K`` (``theta``: model parameters, ``phi``: guide parameters):

* ``standard``: autodiff of the reparameterised bound [1]; unbiased for its objective.
* ``stl`` (sticking the landing [2]): ``log q`` is evaluated with stopped ``phi`` (the path
  derivative through ``z`` stays), dropping the score term. Unbiased for the ELBO (``K = 1``),
  where the dropped term has mean zero; for ``K > 1`` it is biased in general [4].
* ``dreg`` (doubly reparameterised [4]): ``theta`` gets ``sum_k w~_k d log w_k / d theta``
  (the standard gradient); ``phi`` gets ``sum_k w~_k^2 d log w_k / d z_k dz_k / d phi`` with
  stopped ``phi`` in ``log q``. Unbiased for ``IWAE_K``; with the exact posterior as guide its
  ``phi`` gradient is zero for every draw. On an ELBO term (``K = 1``) it is STL.

When ``theta`` and ``phi`` need different surrogates (DReG, PIWAE) the gradients are computed per
parameter group with ``torch.autograd.grad`` (one extra pass through the model's backward) and
attached to the returned scalar, so its ``backward`` sets exactly those gradients. Such a
surrogate has no second derivatives. A parameter shared by model and guide gets both gradients.

References:
    1. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
    2. Sticking the Landing: Simple, Lower-Variance Gradient Estimators for Variational
       Inference, Roeder, Wu & Duvenaud, arXiv:1703.09194.
    3. Tighter Variational Bounds are Not Necessarily Better, Rainforth, Kosiorek, Le, Maddison,
       Igl, Wood & Teh, arXiv:1802.04537.
    4. Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, Tucker, Lawson, Gu
       & Maddison, arXiv:1810.04152.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor, nn
from torch.func import functional_call

from aezoo.core import Autoencoder
from aezoo.inference.compiled import Nodes, Sites
from aezoo.traces import Traces

ESTIMATORS = ("standard", "stl", "dreg")
VARIANTS = ("iwae", "piwae", "ciwae")


def miwae_bound(log_w: Tensor) -> Tensor:
    """``(B,)`` mean over groups of ``IWAE_K``, from log-weights ``(M, K, B)``; ``M = 1`` is IWAE."""
    return (log_w.logsumexp(1) - math.log(log_w.shape[1])).mean(0)


def elbo(log_w: Tensor) -> Tensor:
    """``(B,)`` the ELBO estimate, the mean log-weight over all ``M K`` particles."""
    return log_w.mean((0, 1))


def pooled_iwae_bound(log_w: Tensor) -> Tensor:
    """``(B,)`` ``IWAE_{MK}``: one bound over all ``M K`` particles."""
    return log_w.flatten(0, 1).logsumexp(0) - math.log(log_w.shape[0] * log_w.shape[1])


def dreg_surrogate(log_w_stl: Tensor) -> Tensor:
    """``(B,)`` ``mean_m sum_k stopgrad(w~_mk^2) log w_mk``: DReG's guide surrogate for MIWAE.

    ``log_w_stl`` ``(M, K, B)`` must hold ``log q`` with stopped guide parameters; only its
    gradient is meaningful, not its value.
    """
    w = torch.softmax(log_w_stl.detach(), dim=1)
    return (w**2 * log_w_stl).sum(1).mean(0)


def objectives(log_w: Tensor, variant: str, beta: float) -> tuple[Tensor, Tensor]:
    """``(decoder, encoder)`` per-datum objectives ``(B,)`` of a variant from log-weights ``(M, K, B)``.

    ``iwae``: MIWAE(M, K) for both. ``ciwae``: ``beta ELBO + (1 - beta) MIWAE`` for both.
    ``piwae``: ``IWAE_{MK}`` for the model, MIWAE(M, K) on the same draws for the guide.
    """
    if variant == "iwae":
        bound = miwae_bound(log_w)
        return bound, bound
    if variant == "ciwae":
        bound = beta * elbo(log_w) + (1 - beta) * miwae_bound(log_w)
        return bound, bound
    return pooled_iwae_bound(log_w), miwae_bound(log_w)


def encoder_surrogate(log_w: Tensor, log_w_stl: Tensor | None, estimator: str, variant: str,
                      beta: float) -> Tensor:
    """``(B,)`` a surrogate whose guide-parameter gradient is the estimator's for the encoder objective."""
    if estimator == "standard":
        return objectives(log_w, variant, beta)[1]
    if estimator == "stl":
        return objectives(log_w_stl, variant, beta)[1]
    iw = dreg_surrogate(log_w_stl)
    return beta * elbo(log_w_stl) + (1 - beta) * iw if variant == "ciwae" else iw


def stopped_guide_log_prob(ae: Autoencoder, tr: Traces, *batch: Tensor, num_data: int | None) -> Tensor:
    """``(K, B)`` log q(z | x) at the traced latents with the guide's parameters stopped.

    The guide is re-run on detached copies of its parameters (``torch.func.functional_call``) and
    conditioned on the traced draws, so gradients reach ``phi`` only through ``z``, also through
    latents that parameterise later guide sites. Any distribution works; costs one guide forward.
    """
    params = {name: p.detach() for name, p in ae.guide.named_parameters()}
    values = {name: tr.guide.nodes[name]["value"] for name in tr.latent}

    def stopped(*args, **kwargs):
        return functional_call(ae.guide, params, args, kwargs)

    with warnings.catch_warnings():  # global param store mode: detached copies are not registered
        warnings.filterwarnings("ignore", message=".*not registered in the param store")
        with pyro.plate("particles", tr.num_particles, dim=-tr.nesting - 1):
            if isinstance(tr.guide, Nodes):  # traces of the compiled path: replay there too
                with Sites(values) as sites:
                    stopped(*batch, num_data=num_data)
                return tr.log_prob(sites.trace, tr.latent)
            guide_tr = poutine.trace(poutine.condition(stopped, data=values)).get_trace(*batch, num_data=num_data)
    return tr.log_prob(prune_subsample_sites(guide_tr), tr.latent)


def routed(value: Tensor, model_loss: Tensor, guide_loss: Tensor, model: nn.Module, guide: nn.Module) -> Tensor:
    """``value`` (detached) carrying d model_loss / d theta for ``model`` and d guide_loss / d phi for ``guide``."""
    link = value.new_zeros(())
    for loss, params, retain in ((model_loss, _trainable(model.parameters()), True),
                                 (guide_loss, _trainable(guide.parameters()), False)):
        if not params or not loss.requires_grad:
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
        link = link + sum(((p * g).sum() for p, g in zip(params, grads) if g is not None), value.new_zeros(()))
    return value.detach() + (link - link.detach())


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]
