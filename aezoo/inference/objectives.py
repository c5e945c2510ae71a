"""Objective components that engines compose with their bound.

``LatentScale`` weights the latent terms of an ELBO: under it, every non-observed sample site of
a model and its guide gets its log-density multiplied by ``beta``, so the ELBO's KL term becomes
``beta * KL(q(z | x) || p(z))`` (analytic or Monte Carlo) while the likelihood keeps weight 1.
This is the beta-VAE objective ("beta-VAE: Learning Basic Visual Concepts with a Constrained
Variational Framework", Higgins et al., ICLR 2017). ``LatentMask`` is its ``beta = 0`` limit: the
latent terms are dropped (Pyro's site mask), leaving ``E_q[log p(x | z)]``, the reconstruction
term of a Wasserstein autoencoder. ``SiteRecorder`` keeps the last message of one site so that
an engine can add sample-based penalties (:mod:`aezoo.inference.penalties`) on the same draws.
"""

from __future__ import annotations

from pyro.poutine.messenger import Messenger


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
