"""Stochastic variational inference: maximise the ELBO, optionally beta-weighted and penalised.

With ``analytic_kl`` (default) Pyro's ``TraceMeanField_ELBO`` uses the closed-form
KL(q(z | x) || p(z)) wherever one is registered and a Monte Carlo estimate elsewhere; it needs
a mean-field model (latents independent given the data). Requires a guide over every latent
site; any guide works (score-function terms appear for non-reparameterised sites), except that
``beta = 0`` needs reparameterised guide sites. With a deterministic (Delta) guide ``log q = 0``
and the "ELBO" is ``log p(x, z = encoder(x))``, not a bound.

The objective, per datum, averaged over the minibatch of ``B`` data and ``K`` particles::

    E_q[log p(x | z)] - beta_e * KL(q(z | x) || p(z)) - penalty_weight * D(q(z), p(z))

KL warm-up [8, 9]: ``beta_e = beta * min(1, e / kl_warmup_epochs)`` at training progress ``e``
(epochs done, fractional within an epoch; see :func:`aezoo.inference.objectives.at_epoch`), so
``beta_e = beta`` once ``e >= kl_warmup_epochs``, without warm-up, and outside a fit.

Capacity-controlled beta-VAE [10] (``capacity_max`` set) replaces the KL term by
``gamma * |KL(q(z | x) || p(z)) - C_e|`` per datum, ``C_e = capacity_max * min(1, e /
capacity_epochs)`` nats: the KL of each datum (closed form with ``analytic_kl`` where
registered, else ``log q(z) - log p(z)`` at the draw, averaged over the particles) is pulled
towards a capacity that grows during training. It is computed from one trace of guide and model
(no score-function terms), so it needs reparameterised guide sites inside the ``"data"`` plate.
[10] applies ``|.|`` to the minibatch-mean KL; here it applies per datum, so the loss is an
estimate of the objective's mean over the data that does not depend on the batch size.

``D`` compares the aggregate posterior q(z) (the guide's draws of site ``"z"`` for the batch)
with the prior p(z) (as many draws from the model's own distribution at ``"z"``), per particle:

* ``"mmd"``: unbiased MMD^2 [4] with the ``mmd_kernel`` (IMQ by default, ``C = 2 D_z mmd_scale``).
  ``beta = 1 - alpha`` and ``penalty_weight = alpha + lambda - 1`` give InfoVAE [3] (eq. 6);
  ``beta = 0`` with a Delta guide gives WAE-MMD [5] with cost ``-log p(x | z)``.
* ``"swd"``: sliced Wasserstein ``SW_2^2`` with ``swd_projections`` directions (SWAE [6]).
* ``"dip_i"`` / ``"dip_ii"``: DIP-VAE [7]; ``D`` is ``sum_{i != j} C_ij^2 + dip_diag_weight *
  sum_i (C_ii - 1)^2`` for ``C`` the covariance of the guide means (i) or of q(z) (ii), read from
  the guide's ``mean``/``variance`` (or ``covariance_matrix``); no prior draws.

Pyro's estimator of the ELBO (``elbo``): ``"trace"`` is ``TraceMeanField_ELBO`` with
``analytic_kl`` (reparameterised guides only) else ``Trace_ELBO``; ``"tracegraph"`` is
``TraceGraph_ELBO`` [11], the score-function estimator for non-reparameterised (e.g. discrete)
guide sites, Rao-Blackwellised by the dependency graph (each site's score is weighted by its
downstream costs only) and with the baselines that guide sites declare through Pyro's
``infer={"baseline": ...}``; ``"traceenum"`` is ``TraceEnum_ELBO`` [12] with every discrete guide
site enumerated in parallel (``config_enumerate``), which sums them out exactly: the model must
broadcast correctly over the enumeration dims left of its plates (index parameters by the
discrete value, as ``gmvae`` does). ``analytic_kl`` applies to ``"trace"`` only; ``"traceenum"``
supports neither ``beta != 1``, warm-up, penalties nor the capacity objective (Pyro's
enumeration needs one scale for the sites it sums out together), and the capacity objective
is computed from its own traces, so it needs ``elbo="trace"``.

``loss`` (and so ``FitResult.losses``) is the negative of that objective in nats per datum, at
the schedule's values of each step (so warm-up epochs do not record the ELBO);
with a penalty the recorded epoch value is the size-weighted mean over the epoch's minibatches
of ``-ELBO_beta / N + penalty_weight * D``, where ``D`` is a per-minibatch estimate. A
one-datum minibatch carries no MMD term (the U-statistic needs two draws).

References:
    1. Auto-Encoding Variational Bayes, Kingma & Welling, arXiv:1312.6114.
    2. Stochastic Variational Inference, Hoffman, Blei, Wang & Paisley, arXiv:1206.7051.
    3. InfoVAE: Information Maximizing Variational Autoencoders, Zhao, Song & Ermon, arXiv:1706.02262.
    4. A Kernel Two-Sample Test, Gretton et al., JMLR 2012.
    5. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
    6. Sliced-Wasserstein Autoencoder, Kolouri, Pope, Martin & Rohde, arXiv:1804.01947.
    7. Variational Inference of Disentangled Latent Concepts from Unlabeled Observations, Kumar,
       Sattigeri & Balakrishnan, arXiv:1711.00848.
    8. Generating Sentences from a Continuous Space, Bowman et al., arXiv:1511.06349.
    9. Ladder Variational Autoencoders, Sønderby, Raiko, Maaløe, Sønderby & Winther, arXiv:1602.02282.
    10. Understanding disentangling in beta-VAE, Burgess et al., arXiv:1804.03599.
    11. Gradient Estimation Using Stochastic Computation Graphs, Schulman, Heess, Weber & Abbeel,
        arXiv:1506.05254.
    12. Tensor Variable Elimination for Plated Factor Graphs, Obermeyer et al., arXiv:1902.03210.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, config_enumerate
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference import penalties
from aezoo.inference.importance import data_dim, guide_sites, max_plate_nesting, trace_pair
from aezoo.inference.loop import GradientEngine
from aezoo.inference.objectives import SiteRecorder, capacity_loss, elbo_terms, latent_weight, ramp

PENALTIES = ("mmd", "swd", "dip_i", "dip_ii")
PENALTY_SITE = "z"
ELBOS = ("trace", "tracegraph", "traceenum")


@dataclass(frozen=True)
class SVI(GradientEngine):
    """(Penalised, beta-weighted) ELBO maximisation; ``loss`` is the negative objective per datum.

    Attributes:
        num_particles: Monte Carlo samples per step (vectorised).
        analytic_kl: use closed-form KL terms (``TraceMeanField_ELBO``).
        beta: weight (>= 0) of the KL term (beta-VAE, Higgins et al. 2017); 1 is the ELBO, 0
            drops the latent terms (WAE/SWAE).
        penalty: ``None`` or one of ``"mmd"``, ``"swd"``, ``"dip_i"``, ``"dip_ii"`` (module docstring).
        penalty_weight: lambda (>= 0) of the penalty.
        mmd_kernel: ``"imq"`` or ``"rbf"``.
        mmd_scale: the kernel's sigma^2 (the prior variance, 1 for N(0, I)).
        swd_projections: random directions of the sliced Wasserstein distance.
        dip_diag_weight: lambda_d / lambda_od of DIP-VAE; ``None``: 10 for ``dip_i``, 1 for ``dip_ii``.
        kl_warmup_epochs: epochs over which the KL weight grows linearly from 0 to ``beta``; 0: none.
        capacity_max: ``None``, or the final capacity ``C`` (nats, >= 0) of Burgess et al.'s objective.
        capacity_epochs: epochs over which ``C`` grows linearly from 0 to ``capacity_max``; 0: constant.
        gamma: weight (> 0) of ``|KL - C|`` in the capacity objective (1000 in Burgess et al.).
        elbo: Pyro's ELBO estimator, ``"trace"``, ``"tracegraph"`` (score function, Rao-Blackwellised)
            or ``"traceenum"`` (discrete guide sites enumerated exactly); see the module docstring.
    """

    num_particles: int = 1
    analytic_kl: bool = True
    beta: float = 1.0
    penalty: str | None = None
    penalty_weight: float = 1.0
    mmd_kernel: str = "imq"
    mmd_scale: float = 1.0
    swd_projections: int = 50
    dip_diag_weight: float | None = None
    kl_warmup_epochs: int = 0
    capacity_max: float | None = None
    capacity_epochs: int = 0
    gamma: float = 1000.0
    elbo: str = "trace"

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ValueError(f"beta must be non-negative, got {self.beta}")
        for name in ("kl_warmup_epochs", "capacity_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0 < self.gamma < float("inf"):
            raise ValueError(f"gamma must be positive and finite, got {self.gamma}")
        if self.capacity_max is None:
            if self.capacity_epochs or self.gamma != 1000.0:
                raise ValueError("capacity_epochs and gamma apply only with capacity_max set")
        else:
            if not 0 <= self.capacity_max < float("inf"):
                raise ValueError(f"capacity_max must be non-negative and finite, got {self.capacity_max}")
            if self.beta != 1.0 or self.kl_warmup_epochs:
                raise ValueError("the capacity objective weights the KL by gamma: leave beta=1 and "
                                 "kl_warmup_epochs=0 with capacity_max")
        if self.penalty is not None and self.penalty not in PENALTIES:
            raise ValueError(f"unknown penalty {self.penalty!r}; choose one of {PENALTIES} or none")
        if not self.penalty_weight >= 0:
            raise ValueError(f"penalty_weight must be non-negative, got {self.penalty_weight}")
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; choose one of {ELBOS}")
        if self.elbo != "trace" and self.capacity_max is not None:
            raise ValueError(f"the capacity objective computes its own KL terms; it needs elbo='trace', "
                             f"not {self.elbo!r}")
        if self.elbo == "traceenum" and (self.beta != 1.0 or self.kl_warmup_epochs or self.penalty is not None):
            raise ValueError("elbo='traceenum' supports the plain ELBO only: leave beta=1, kl_warmup_epochs=0 and "
                             "penalty=None (use elbo='tracegraph' for those with discrete latents)")
        if self.mmd_kernel not in penalties.KERNELS:
            raise ValueError(f"unknown mmd_kernel {self.mmd_kernel!r}; choose one of {penalties.KERNELS}")

    def kl_weight(self) -> float:
        """``beta_e``, the KL weight at the current training progress (``beta`` outside a fit)."""
        return self.beta * ramp(self.kl_warmup_epochs)

    def capacity(self) -> float:
        """``C_e`` in nats at the current training progress (``capacity_max`` outside a fit)."""
        return self.capacity_max * ramp(self.capacity_epochs)

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        if self.capacity_max is not None:
            tr = trace_pair(ae, *batch, num_particles=self.num_particles, num_data=num_data)
            value = capacity_loss(*elbo_terms(tr, self.analytic_kl), self.capacity(), self.gamma)
            if self.penalty is None:
                return value
            return value + self.penalty_weight * self.divergence(tr.model.nodes[PENALTY_SITE],
                                                                 tr.guide.nodes[PENALTY_SITE])
        model, guide = ae.model, ae.guide
        if self.elbo == "traceenum":
            guide = config_enumerate(guide, default="parallel")
        beta = self.kl_weight()
        weight_model, weight_guide = latent_weight(beta), latent_weight(beta)
        if weight_model is not None:
            model, guide = weight_model(model), weight_guide(guide)
        if self.penalty is None:
            return self.negative_elbo(ae, model, guide, *batch, num_data=num_data) / num_data
        prior, posterior = SiteRecorder(PENALTY_SITE), SiteRecorder(PENALTY_SITE)
        value = self.negative_elbo(ae, prior(model), posterior(guide), *batch, num_data=num_data) / num_data
        return value + self.penalty_weight * self.divergence(prior.msg, posterior.msg)

    def negative_elbo(self, ae: Autoencoder, model, guide, *batch: Tensor, num_data: int) -> Tensor:
        """The selected Pyro ELBO's differentiable negative value for the minibatch (plate-scaled: ``N`` data)."""
        kwargs = {"num_particles": self.num_particles, "vectorize_particles": True,
                  "max_plate_nesting": max_plate_nesting(ae, *batch)}
        if self.elbo == "tracegraph":
            # TraceGraph_ELBO has no differentiable_loss: its (private, stable since Pyro 0.2) pair of
            # the ELBO value and the surrogate loss whose gradient is the estimator gives one
            elbo, surrogate = TraceGraph_ELBO(**kwargs)._loss_and_surrogate_loss(model, guide, batch,
                                                                                {"num_data": num_data})
            return -elbo.detach() + (surrogate - surrogate.detach())
        if self.elbo == "traceenum":
            elbo = TraceEnum_ELBO(**kwargs)
            if not torch.is_grad_enabled():  # its differentiable_loss refuses to run without gradients
                return batch[0].new_tensor(elbo.loss(model, guide, *batch, num_data=num_data))
            return elbo.differentiable_loss(model, guide, *batch, num_data=num_data)
        elbo = (TraceMeanField_ELBO if self.analytic_kl else Trace_ELBO)(**kwargs)
        return elbo.differentiable_loss(model, guide, *batch, num_data=num_data)

    def divergence(self, prior: dict, posterior: dict) -> Tensor:
        """The penalty ``D`` from the model's and the guide's messages at site ``"z"``, mean over particles."""
        q = posterior["value"]
        if self.penalty.startswith("dip"):
            fn = posterior["fn"]
            cov = getattr(fn, "covariance_matrix", None)
            cov = torch.diag_embed(fn.variance) if cov is None else cov
            variant = self.penalty[4:]
            ratio = self.dip_diag_weight if self.dip_diag_weight is not None else (10.0 if variant == "i" else 1.0)
            mu = fn.mean.expand(q.shape)
            return penalties.dip_covariance_penalty(mu, variant, 1.0, ratio, cov.expand(*q.shape, q.shape[-1])).mean()
        fn = prior["fn"]
        p = fn.rsample() if fn.has_rsample else fn.sample()
        if self.penalty == "swd":
            return penalties.sliced_wasserstein(q, p.expand(q.shape), self.swd_projections).mean()
        if q.shape[-2] < 2:
            return q.new_zeros(())  # one datum: no MMD U-statistic
        return penalties.mmd(q, p.expand(q.shape), self.mmd_kernel, self.mmd_scale).mean()

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` when a penalty needs a site ``"z"`` of shape ``(B, D_z)`` that the pair lacks,
        ``beta = 0`` (or a warm-up from 0) meets a non-reparameterised guide site, or the capacity
        objective meets one or a latent outside the ``"data"`` plate."""
        sites = guide_sites(ae, *batch)
        reparameterised = all(s["fn"].has_rsample for s in sites.values())
        if self.elbo == "trace" and self.analytic_kl and not reparameterised:
            bad = [n for n, s in sites.items() if not s["fn"].has_rsample]
            raise ValueError(f"svi with elbo='trace' and analytic_kl (TraceMeanField_ELBO) does not apply to "
                             f"{ae.name}: "
                             f"its guide sites {bad} are not reparameterised; use elbo='traceenum' (exact sums over "
                             "discrete sites), elbo='tracegraph' or analytic_kl=False (score-function estimators)")
        if (self.beta == 0 or self.kl_warmup_epochs) and not reparameterised:
            raise ValueError("svi with beta=0 or kl_warmup_epochs needs reparameterised guide sites (rsample): "
                             "masking the latent terms would drop their score-function gradients")
        if self.capacity_max is not None:
            if not reparameterised:
                raise ValueError("svi with capacity_max needs reparameterised guide sites (rsample)")
            for name, site in sites.items():
                data_dim(name, site)  # ValueError for a global latent: its KL is not per datum
        if self.penalty is None:
            return
        site = sites.get(PENALTY_SITE)
        if site is None or site["value"].shape[:-1] != batch[0].shape[:1] or site["fn"].event_dim != 1:
            raise ValueError(f"the svi penalty {self.penalty!r} does not apply to {ae.name}: it needs a latent "
                             f"site {PENALTY_SITE!r} of shape (B, D_z) in the guide and the model")


ENGINE = SVI
