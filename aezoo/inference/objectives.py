"""Objective components that engines compose with their bound.

``LatentScale`` weights the latent terms of an ELBO: under it, every non-observed sample site of
a model and its guide gets its log-density multiplied by ``beta``, so the ELBO's KL term becomes
``beta * KL(q(z | x) || p(z))`` (analytic or Monte Carlo) while the likelihood keeps weight 1.
This is the beta-VAE objective ("beta-VAE: Learning Basic Visual Concepts with a Constrained
Variational Framework", Higgins et al., ICLR 2017).
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
