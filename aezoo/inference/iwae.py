"""Importance-weighted bounds (IWAE, MIWAE, PIWAE, CIWAE) with standard, STL or DReG gradients.

For each datum, ``M K`` particles ``z_mk ~ q(z | x)`` (vectorised, one ``"particles"`` plate) give
log-weights ``log w_mk = log p(x, z_mk) - log q(z_mk | x)``, grouped as ``M`` groups of ``K``:

* ``iwae`` [1] (``M = 1``) and MIWAE [3]: ``mean_m log (1/K) sum_k w_mk``, the mean of ``M``
  independent ``IWAE_K`` bounds. ``K = 1`` is the ELBO.
* ``ciwae`` [3]: ``beta ELBO + (1 - beta) MIWAE`` on the same draws, with Rainforth et al.'s
  convention that ``beta`` weighs the ELBO (``beta = 1``: VAE, ``beta = 0``: IWAE); the ELBO is
  the mean of all ``M K`` log-weights.
* ``piwae`` [3]: the model (decoder) follows ``IWAE_{MK}`` over all particles, the guide
  (encoder) follows MIWAE(M, K) on the same draws (PIWAE(M, K) in [3]). The recorded loss is
  ``-IWAE_{MK}``, the model's objective.

The loss is the negative objective in nats per datum, averaged over the minibatch, so
``FitResult.losses`` are the bound per epoch. Gradient estimators (``estimator``, details and
bias in :mod:`aezoo.inference.estimators`): ``standard`` [1], ``stl`` [2] (biased for ``K > 1``),
``dreg`` [4] (unbiased, zero guide-gradient variance at the exact posterior). Model gradients are
the same for all three; ``stl``/``dreg`` re-run the guide once, ``dreg`` and ``piwae`` take one
more backward pass through the model.

Requirements: every latent site of the guide must be reparameterisable (``rsample``), for all
estimators, and every latent must be local (inside the ``"data"`` plate); ``check`` raises
``ValueError`` otherwise (use the ``svi`` engine for such guides). Deterministic (Delta) guides,
as in ``wae``/``swae``, are refused with "does not apply": log q = 0 is no density over z.

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
from dataclasses import dataclass

import torch
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference import compiled
from aezoo.inference import estimators as est
from aezoo.inference.loop import GradientEngine
from aezoo.traces import check_weights_exist, trace_pair


def iwae_bound(log_w: Tensor) -> Tensor:
    """Per-datum IWAE bound ``(B,)`` from log-weights ``(K, B)``: logsumexp over K minus log K."""
    return log_w.logsumexp(0) - math.log(log_w.shape[0])


@dataclass(frozen=True)
class IWAE(GradientEngine):
    """Importance-weighted bound maximisation; ``loss`` is the negative bound in nats per datum.

    Needs a fully reparameterised guide over local latents (see the module docstring).

    Attributes:
        num_particles: importance samples ``K`` per group and datum.
        estimator: gradient estimator, one of ``"standard"``, ``"stl"``, ``"dreg"``.
        num_groups: ``M`` independent groups of ``K`` (MIWAE; 1 is IWAE). PIWAE: the model uses
            all ``M K`` particles as one group.
        variant: ``"iwae"`` (MIWAE when ``num_groups > 1``), ``"piwae"`` or ``"ciwae"``.
        ciwae_beta: CIWAE's weight of the ELBO, in ``[0, 1]``.
    """

    num_particles: int = 5
    estimator: str = "standard"
    num_groups: int = 1
    variant: str = "iwae"
    ciwae_beta: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.estimator not in est.ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; choose one of {est.ESTIMATORS}")
        if self.variant not in est.VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {est.VARIANTS}")
        if self.num_particles < 1 or self.num_groups < 1:
            raise ValueError(f"num_particles and num_groups must be at least 1, got {self.num_particles} "
                             f"and {self.num_groups}")
        if not 0.0 <= self.ciwae_beta <= 1.0:
            raise ValueError(f"ciwae_beta must lie in [0, 1], got {self.ciwae_beta}")

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        return self._loss(ae, *batch, num_data=num_data)

    def _loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        m, k = self.num_groups, self.num_particles
        expected = compiled.checked(ae, self)  # the compiled path's sites, checked in compile; None: Pyro's
        tr = None if expected is None else compiled.trace_pair(ae, *batch, num_particles=m * k, num_data=num_data)
        if tr is None or not compiled.accepts(expected, tr.model, tr.guide):
            tr = trace_pair(ae, *batch, num_particles=m * k, num_data=num_data)
        log_p = tr.log_prob(tr.model, [n for n, s in tr.model.nodes.items() if s["type"] == "sample"])
        log_w = (log_p - tr.log_prob(tr.guide, tr.latent)).reshape(m, k, -1)
        decoder, encoder = est.objectives(log_w, self.variant, self.ciwae_beta)
        value = -decoder.mean()
        if self.estimator == "standard" and self.variant != "piwae":
            return value  # autodiff of the bound itself
        if not torch.is_grad_enabled():
            return value
        log_w_stl = None
        if self.estimator != "standard":
            log_q = est.stopped_guide_log_prob(ae, tr, *batch, num_data=num_data)
            log_w_stl = (log_p - log_q).reshape(m, k, -1)
        surrogate = -est.encoder_surrogate(log_w, log_w_stl, self.estimator, self.variant, self.ciwae_beta).mean()
        if self.estimator == "stl" and self.variant != "piwae":
            # one objective for both groups; its model gradient equals the standard one
            return value.detach() + (surrogate - surrogate.detach())
        return est.routed(value, -decoder.mean(), surrogate, ae.model, ae.guide)

    def compile(self, ae: Autoencoder, batch: tuple, num_data: int) -> str:
        """``"compiled"`` when the log-weights from :mod:`aezoo.inference.compiled` give this loss and its
        gradients on ``batch`` (the fit's first minibatch), which the fit's steps then use, else ``"pyro"``."""
        return compiled.choose(ae, self, batch, num_data, self._loss)

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        sites = check_weights_exist(ae, "iwae", *batch)
        bad = [n for n, s in sites.items() if not s["fn"].has_rsample]
        if bad:
            raise ValueError(f"the iwae engine does not apply to {ae.name}: it needs reparameterised guide sites "
                             f"(rsample) for every estimator; {bad} are not (use --engine rws or svi)")

ENGINE = IWAE
