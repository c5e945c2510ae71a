"""Evaluation: importance-sampled log p(x) and the ELBO per datum, reconstructions and samples.

All log-likelihoods are in nats per datum. The estimator of log p(x_b) is
``log (1/K) sum_k p(x_b, z_k) / q(z_k | x_b)`` with ``z_k ~ q(z | x_b)`` ("Importance Weighted
Autoencoders", Burda, Grosse & Salakhutdinov, arXiv:1509.00519, K = 5000 in the paper); it is
a lower bound in expectation that tightens as K grows. The same weights give the ELBO
estimate (their mean). Work is chunked over data and particles so memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro import poutine
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.importance import log_weights


@dataclass
class ImportanceEstimate:
    """Per-datum estimates from one set of importance weights.

    Attributes:
        log_likelihood: ``(N,)`` IS estimate of log p(x_n) with K particles, nats.
        elbo: ``(N,)`` ELBO estimate (mean log-weight over the K particles), nats.
        num_particles: ``K``.
    """

    log_likelihood: Tensor
    elbo: Tensor
    num_particles: int


@torch.no_grad()
def importance_estimate(
    ae: Autoencoder,
    *data: Tensor,
    num_particles: int = 5000,
    max_elements: int = 2**22,
    batch_size: int = 100,
) -> ImportanceEstimate:
    """Importance-sampled log p(x) and ELBO for every datum.

    Args:
        ae: a trained autoencoder with local latents only.
        data: ``x`` ``(N, D_x)`` then covariates; moved to ``ae``'s device chunk by chunk.
        num_particles: ``K`` importance samples per datum.
        max_elements: bound on ``particles x batch x D_x`` per chunk (memory).
        batch_size: data points per chunk.

    Returns:
        :class:`ImportanceEstimate` with ``(N,)`` tensors on the CPU.
    """
    device = next(ae.parameters()).device
    x_size = max(data[0][0].numel(), 1)
    ll, elbo = [], []
    was_training = ae.training
    ae.eval()
    for start in range(0, len(data[0]), batch_size):
        batch = tuple(d[start : start + batch_size].to(device) for d in data)
        chunk = max(1, min(num_particles, max_elements // (len(batch[0]) * x_size)))
        lw = torch.cat([
            log_weights(ae, *batch, num_particles=min(chunk, num_particles - k))
            for k in range(0, num_particles, chunk)
        ])
        ll.append((lw.logsumexp(0) - math.log(num_particles)).cpu())
        elbo.append(lw.mean(0).cpu())
    ae.train(was_training)
    return ImportanceEstimate(torch.cat(ll), torch.cat(elbo), num_particles)


@torch.no_grad()
def reconstruct(ae: Autoencoder, *data: Tensor, site: str = "x") -> Tensor:
    """Mean of p(x | z) at one draw ``z ~ q(z | x)``: ``(B, D_x)``."""
    guide_tr = poutine.trace(ae.guide).get_trace(*data)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*data)
    return model_tr.nodes[site]["fn"].mean


@torch.no_grad()
def generate(ae: Autoencoder, *like: Tensor, site: str = "x") -> Tensor:
    """Mean of p(x | z) at prior draws ``z ~ p(z)``, one per row of ``like`` ``(B, D_x)``."""
    model_tr = poutine.trace(poutine.uncondition(ae.model)).get_trace(*like)
    return model_tr.nodes[site]["fn"].mean
