"""Objective components that engines compose with their bound.

``LatentScale`` weights the latent terms of an ELBO: under it, every non-observed sample site of
a model and its guide gets its log-density multiplied by ``beta``, so the ELBO's KL term becomes
``beta * KL(q(z | x) || p(z))`` (analytic or Monte Carlo) while the likelihood keeps weight 1.
This is the beta-VAE objective ("beta-VAE: Learning Basic Visual Concepts with a Constrained
Variational Framework", Higgins et al., ICLR 2017). ``LatentMask`` is its ``beta = 0`` limit: the
latent terms are dropped (Pyro's site mask), leaving ``E_q[log p(x | z)]``, the reconstruction
term of a Wasserstein autoencoder. ``SiteRecorder`` keeps the last message of one site so that
an engine can add sample-based penalties (:mod:`aezoo.inference.penalties`) on the same draws.

Schedules read the training progress ``e`` (epochs done, fractional within an epoch) that the
shared loop publishes with :func:`aezoo.progress.at_epoch` around every step; outside a fit
(``current_epoch()`` is ``None``) every schedule is finished, so a loss evaluated there is the
target objective. :func:`aezoo.progress.ramp` is the linear schedule ``min(1, e / E)`` of KL
warm-up [1, 2] and of the capacity ``C`` [3] (the terms :mod:`aezoo.inference.terms.warmup` and
:mod:`aezoo.inference.terms.capacity`).
:func:`elbo_terms` splits the ELBO per datum into ``E_q[log p(x | z)]`` and
``KL(q(z | x) || p(z))`` on one set of draws.

References:
    1. Generating Sentences from a Continuous Space, Bowman et al., arXiv:1511.06349.
    2. Ladder Variational Autoencoders, Sønderby et al., arXiv:1602.02282.
    3. Understanding disentangling in beta-VAE, Burgess et al., arXiv:1804.03599.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor
from torch.distributions import kl_divergence

from aezoo.traces import Traces


class LatentScale(Messenger):
    """Multiply the scale of every latent (non-observed) sample site by ``beta`` (> 0)."""

    def __init__(self, beta: float) -> None:
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        super().__init__()
        self.beta = beta

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.beta


class LatentMask(Messenger):
    """Mask out every latent (non-observed) sample site: its log-density (and KL) counts zero.

    Values are still drawn (reparameterised) and reach the likelihood, so an ELBO under this
    handler is ``E_q[log p(x | z)]``. A non-reparameterised guide site would lose its
    score-function term, so use it only with ``rsample`` guides.
    """

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["mask"] = False


def latent_weight(beta: float) -> Messenger | None:
    """The handler weighting latent terms by ``beta >= 0``: ``None`` for 1, ``LatentMask`` for 0."""
    if beta == 1.0:
        return None
    if beta == 0.0:
        return LatentMask()
    return LatentScale(beta)


class SiteRecorder(Messenger):
    """Keep the last processed message of sample site ``name`` (its ``fn`` and ``value``) in ``msg``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.msg: dict | None = None

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] == self.name:
            self.msg = msg


def elbo_terms(tr: Traces, analytic_kl: bool = True) -> tuple[Tensor, Tensor]:
    """Per-datum reconstruction and KL terms of a guide/model trace pair, on the same draws.

    Args:
        tr: traces from :func:`aezoo.traces.trace_pair`; every latent inside the
            ``"data"`` plate.
        analytic_kl: the closed-form KL of each latent site where ``kl_divergence`` has one
            (exact for mean-field models), else the one-draw estimate ``log q(z) - log p(z)``.

    Returns:
        ``rec`` and ``kl``, each ``(K, B)`` in nats: ``log p(x_b | z)`` summed over observed sites and
        ``KL(q(z | x_b) || p(z))`` summed over latent sites; masks applied, plate scales ignored.
    """
    kls = list(site_kls(tr, analytic_kl).values())
    kl = sum(kls[1:], kls[0]) if kls else torch.zeros(tr.num_particles, tr.batch_size, device=tr.device)
    return tr.log_prob(tr.model, tr.observed), kl


def site_kls(tr: Traces, analytic_kl: bool = True) -> dict[str, Tensor]:
    """The KL term of each latent site, name -> ``(K, B)`` nats, as :func:`elbo_terms` sums them."""
    kls = {}
    for name in tr.latent:
        q, p = tr.guide.nodes[name], tr.model.nodes[name]
        term = None
        if analytic_kl:
            try:
                term = kl_divergence(q["fn"], p["fn"])
            except NotImplementedError:
                pass
        if term is None:
            term = q["fn"].log_prob(q["value"]) - p["fn"].log_prob(p["value"])
        term = term.expand(torch.broadcast_shapes(term.shape, q["fn"].batch_shape))
        kls[name] = tr.per_datum(tr.masked(term, q), name, q).sum(-1)
    return kls
