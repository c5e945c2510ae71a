"""Stochastic variational inference: maximise the ELBO, optionally beta-weighted and penalised.

With ``analytic_kl`` (default) Pyro's ``TraceMeanField_ELBO`` uses the closed-form
KL(q(z | x) || p(z)) wherever one is registered and a Monte Carlo estimate elsewhere; it needs
a mean-field model (latents independent given the data). Requires a guide over every latent
site; any guide works (score-function terms appear for non-reparameterised sites), except that
``beta = 0`` needs reparameterised guide sites. With a deterministic (Delta) guide ``log q = 0``
and the "ELBO" is ``log p(x, z = encoder(x))``, not a bound.

The objective, per datum, averaged over the minibatch of ``B`` data and ``K`` particles::

    E_q[log p(x | z)] - beta_e * KL(q(z | x) || p(z)) - penalty_weight * D(q(z), p(z))

The objective terms are objects, one per file in :mod:`aezoo.inference.terms`: KL warm-up [8, 9]
(``kl_warmup_epochs``: ``beta_e = beta * min(1, e / kl_warmup_epochs)`` at training progress
``e``), the capacity objective of [10] (``capacity_max``, ``capacity_epochs``, ``gamma``: the KL
term becomes ``gamma * |KL - C_e|`` per datum) and the penalty ``D`` named by ``penalty``, a key
of :data:`aezoo.inference.terms.TERMS` with its fields set by ``penalty_options``
(``"field=value"`` texts):

* ``"mmd"``: unbiased MMD^2 [4] between q(z) and p(z) (InfoVAE [3], WAE-MMD [5]);
* ``"swd"``: sliced Wasserstein ``SW_2^2`` (SWAE [6]);
* ``"dip_i"`` / ``"dip_ii"``: DIP-VAE [7];
* ``"gsnn"``: the GSNN term of the conditional VAE's hybrid objective (Sohn et al. 2015);
* ``"classification"``: -log q(y | x) on labelled data, the alpha term of M2 (Kingma et al. 2014);
* ``"modality_subsets"``: the unimodal and random-subset ELBOs of MVAE's sub-sampled training
  (Wu & Goodman 2018);
* ``"vq"``: the codebook and commitment terms of vector-quantized autoencoders (van den Oord et al. 2017).

Pyro's estimator of the ELBO (``elbo``): ``"trace"`` is ``TraceMeanField_ELBO`` with
``analytic_kl`` (reparameterised guides only) else ``Trace_ELBO``; ``"tracegraph"`` is
``TraceGraph_ELBO`` [11], the score-function estimator for non-reparameterised (e.g. discrete)
guide sites, Rao-Blackwellised by the dependency graph (each site's score is weighted by its
downstream costs only) and with the baselines that guide sites declare through Pyro's
``infer={"baseline": ...}``; ``"traceenum"`` is ``TraceEnum_ELBO`` [12] with every discrete guide
site enumerated in parallel (``config_enumerate``), which sums them out exactly: the model must
broadcast correctly over the enumeration dims left of its plates (index parameters by the
discrete value, as ``gmvae`` does). ``analytic_kl`` applies to ``"trace"`` only; ``"traceenum"``
supports neither ``beta != 1``, warm-up, q(z) penalties (terms with a ``site``) nor the capacity
objective (Pyro's enumeration needs one scale for the sites it sums out together), and the capacity objective
is computed from its own traces, so it needs ``elbo="trace"``.

Categorical latents stated as one-hot sites can be relaxed (``relaxation``, Jang et al. 2016 [13]):
``"gumbel_softmax"`` or ``"straight_through"`` makes every one-hot latent site of model and guide a
Gumbel-softmax at the temperature its schedule gives (``relaxation_options``, the fields of
:class:`aezoo.inference.terms.temperature.Relaxation`: ``temperature``, ``rate``, ``every``,
``initial``), while the analytic KL stays the categorical one; the capacity objective can give
sites capacities of their own (``capacity_sites``, ``"site=C_max:epochs"`` texts; JointVAE [14]).

``loss`` (and so ``FitResult.losses``) is the negative of that objective in nats per datum, at
the schedule's values of each step (so warm-up epochs do not record the ELBO);
with a penalty the recorded epoch value is the size-weighted mean over the epoch's minibatches
of ``-ELBO_beta / N + penalty_weight * D``, where ``D`` is a per-minibatch estimate.

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
    13. Categorical Reparameterization with Gumbel-Softmax, Jang, Gu & Poole, arXiv:1611.01144.
    14. Learning Disentangled Joint Continuous and Discrete Representations, Dupont, arXiv:1804.00104.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, config_enumerate
from torch import Tensor

from aezoo.checks import integer
from aezoo.core import Autoencoder
from aezoo.inference import compiled
from aezoo.inference.loop import GradientEngine
from aezoo.inference.objectives import SiteRecorder, latent_weight
from aezoo.inference.terms import Term, make_term
from aezoo.inference.terms.capacity import Capacity
from aezoo.inference.terms.temperature import Relaxation, make_relaxation
from aezoo.inference.terms.warmup import KLWarmup
from aezoo.traces import guide_sites, max_plate_nesting

ELBOS = ("trace", "tracegraph", "traceenum")


@functools.lru_cache(maxsize=64)
def _relaxation(name: str, options: tuple[str, ...]) -> Relaxation:
    return make_relaxation(name, options)


@functools.lru_cache(maxsize=64)
def _term(name: str | None, options: tuple[str, ...]) -> Term | None:
    return None if name is None else make_term(name, options)


@dataclass(frozen=True)
class SVI(GradientEngine):
    """(Penalised, beta-weighted) ELBO maximisation; ``loss`` is the negative objective per datum.

    Attributes:
        num_particles: Monte Carlo samples per step (vectorised).
        analytic_kl: use closed-form KL terms (``TraceMeanField_ELBO``).
        beta: weight (>= 0) of the KL term (beta-VAE, Higgins et al. 2017); 1 is the ELBO, 0
            drops the latent terms (WAE/SWAE).
        penalty: ``None`` or a key of :data:`aezoo.inference.terms.TERMS` (module docstring).
        penalty_weight: lambda (>= 0) of the penalty.
        penalty_options: the penalty's fields as ``"field=value"`` texts, e.g. ``("kernel=rbf",)``.
        kl_warmup_epochs: epochs over which the KL weight grows linearly from 0 to ``beta``; 0: none.
        capacity_max: ``None``, or the final capacity ``C`` (nats, >= 0) of Burgess et al.'s objective.
        capacity_epochs: epochs over which ``C`` grows linearly from 0 to ``capacity_max``; 0: constant.
        gamma: weight (> 0) of ``|KL - C|`` in the capacity objective (1000 in Burgess et al.).
        elbo: Pyro's ELBO estimator, ``"trace"``, ``"tracegraph"`` (score function, Rao-Blackwellised)
            or ``"traceenum"`` (discrete guide sites enumerated exactly); see the module docstring.
        relaxation: ``None``, ``"gumbel_softmax"`` or ``"straight_through"``: relax the one-hot latent sites.
        relaxation_options: the relaxation's schedule as ``"field=value"`` texts, e.g. ``("rate=1e-5",)``.
        capacity_sites: ``"site=C_max[:epochs]"`` texts: sites with a capacity of their own.
    """

    num_particles: int = 1
    analytic_kl: bool = True
    beta: float = 1.0
    penalty: str | None = None
    penalty_weight: float = 1.0
    penalty_options: tuple[str, ...] = ()
    kl_warmup_epochs: int = 0
    capacity_max: float | None = None
    capacity_epochs: int = 0
    gamma: float = 1000.0
    elbo: str = "trace"
    relaxation: str | None = None
    relaxation_options: tuple[str, ...] = ()
    capacity_sites: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("num_particles", self.num_particles)
        if not self.beta >= 0:
            raise ValueError(f"beta must be non-negative, got {self.beta}")
        KLWarmup(self.kl_warmup_epochs)  # validates
        if self.capacity_max is None and not self.capacity_sites:
            if self.capacity_epochs or self.gamma != 1000.0:
                raise ValueError("capacity_epochs and gamma apply only with capacity_max (or capacity_sites) set")
        else:
            self.capacity_term()  # validates
            if self.beta != 1.0 or self.kl_warmup_epochs:
                raise ValueError("the capacity objective weights the KL by gamma: leave beta=1 and "
                                 "kl_warmup_epochs=0 with capacity_max")
        if self.penalty is None and self.penalty_options:
            raise ValueError("penalty_options apply only with a penalty set")
        if not self.penalty_weight >= 0:
            raise ValueError(f"penalty_weight must be non-negative, got {self.penalty_weight}")
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown elbo {self.elbo!r}; choose one of {ELBOS}")
        if self.relaxation is None and self.relaxation_options:
            raise ValueError("relaxation_options apply only with a relaxation set")
        relaxation = self.relaxation_term()
        if relaxation is not None and self.elbo == "traceenum":
            raise ValueError("elbo='traceenum' sums discrete sites out exactly; it takes no relaxation")
        if self.elbo != "trace" and self.capacity_term() is not None:
            raise ValueError(f"the capacity objective computes its own KL terms; it needs elbo='trace', "
                             f"not {self.elbo!r}")
        term = self.penalty_term()
        if self.elbo == "traceenum" and (self.beta != 1.0 or self.kl_warmup_epochs or (term and term.site)):
            raise ValueError("elbo='traceenum' supports the plain ELBO and terms that read no latent site (gsnn, "
                             "classification): leave beta=1, kl_warmup_epochs=0 and no q(z) penalty (use "
                             "elbo='tracegraph' for those with discrete latents)")

    def penalty_term(self) -> Term | None:
        """The penalty object named by ``penalty`` with ``penalty_options``, or None (built once per engine)."""
        return _term(self.penalty, self.penalty_options)

    def stepped_terms(self) -> tuple[Term, ...]:
        """The penalty when it has parameters and an optimiser step of its own (the ``critic``), for the loop."""
        term = self.penalty_term()
        return (term,) if term is not None and hasattr(term, "step") and hasattr(term, "own_parameters") else ()

    def capacity_term(self) -> Capacity | None:
        """The capacity objective, or None without ``capacity_max`` and ``capacity_sites``."""
        if self.capacity_max is None and not self.capacity_sites:
            return None
        return Capacity(self.capacity_max, self.capacity_epochs, self.gamma, self.analytic_kl, self.capacity_sites)

    def relaxation_term(self) -> Relaxation | None:
        """The Gumbel-softmax relaxation named by ``relaxation`` with ``relaxation_options``, or None."""
        return None if self.relaxation is None else _relaxation(self.relaxation, self.relaxation_options)

    def relaxed(self, num_data: int):
        """The context relaxing one-hot sites at the scheduled temperature (a no-op without ``relaxation``)."""
        relaxation = self.relaxation_term()
        if relaxation is None:
            return nullcontext()
        return relaxation.applied(math.ceil(num_data / self.batch_size))

    def kl_weight(self) -> float:
        """``beta_e``, the KL weight at the current training progress (``beta`` outside a fit)."""
        return KLWarmup(self.kl_warmup_epochs).weight(self.beta)

    def capacity(self) -> float:
        """``C_e`` in nats at the current training progress (``capacity_max`` outside a fit)."""
        return self.capacity_term().capacity()

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        with self.relaxed(num_data):
            return self._loss(ae, *batch, num_data=num_data)

    def _loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        term = self.penalty_term()
        capacity = self.capacity_term()
        if capacity is not None:
            value, tr = capacity.loss(ae, *batch, num_particles=self.num_particles, num_data=num_data)
            if term is None:
                return value
            site = term.site
            return value + self.penalty_weight * term(ae, batch, num_data, site and tr.model.nodes[site],
                                                      site and tr.guide.nodes[site])
        model, guide = ae.model, ae.guide
        if self.elbo == "traceenum":
            guide = config_enumerate(guide, default="parallel")
        beta = self.kl_weight()
        weight_model, weight_guide = latent_weight(beta), latent_weight(beta)
        if weight_model is not None:
            model, guide = weight_model(model), weight_guide(guide)
        if term is None:
            return self.negative_elbo(ae, model, guide, *batch, num_data=num_data) / num_data
        if term.site is None:
            value = self.negative_elbo(ae, model, guide, *batch, num_data=num_data) / num_data
            return value + self.penalty_weight * term(ae, batch, num_data, None, None)
        prior, posterior = SiteRecorder(term.site), SiteRecorder(term.site)
        value = self.negative_elbo(ae, prior(model), posterior(guide), *batch, num_data=num_data) / num_data
        return value + self.penalty_weight * term(ae, batch, num_data, prior.msg, posterior.msg)

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
            elbo = TraceEnum_ELBO(**kwargs, strict_enumeration_warning=False)  # fully labelled M2 batches: none
            if not torch.is_grad_enabled():  # its differentiable_loss refuses to run without gradients
                return batch[0].new_tensor(elbo.loss(model, guide, *batch, num_data=num_data))
            return elbo.differentiable_loss(model, guide, *batch, num_data=num_data)
        expected = compiled.checked(ae, self)
        if expected is not None:  # the compiled path, checked on this fit's first minibatch (compile)
            value = compiled.negative_elbo(ae, model, guide, batch, num_data, self.num_particles, self.analytic_kl,
                                           expected)
            if value is not None:
                return value
        elbo = (TraceMeanField_ELBO if self.analytic_kl else Trace_ELBO)(**kwargs)
        return elbo.differentiable_loss(model, guide, *batch, num_data=num_data)

    def compile(self, ae: Autoencoder, batch: tuple, num_data: int) -> str:
        """``"compiled"`` when :mod:`aezoo.inference.compiled` gives this objective's loss and gradients on
        ``batch`` (the fit's first minibatch), which the fit's steps then use, else ``"pyro"``. Only
        ``elbo="trace"`` without relaxation or capacity objective is tried; ``num_data``: ``N``."""
        if self.elbo != "trace" or self.relaxation is not None or self.capacity_term() is not None:
            return "pyro"
        return compiled.choose(ae, self, batch, num_data, self._loss)  # _loss is loss without a relaxation

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` when the objective's terms do not fit ``ae``: a penalty's site is missing ("does not
        apply"), ``beta = 0`` or a warm-up meets a non-reparameterised guide site, or the capacity
        objective meets one or a latent outside the ``"data"`` plate. With a relaxation, the relaxed sites
        are checked (and the relaxation needs a one-hot latent site)."""
        relaxation = self.relaxation_term()
        if relaxation is not None:
            relaxation.check(ae, *batch)
        with self.relaxed(len(batch[0])):
            self._check(ae, *batch)

    def _check(self, ae: Autoencoder, *batch: Tensor) -> None:
        sites = guide_sites(ae, *batch)
        reparameterised = all(s["fn"].has_rsample for s in sites.values())
        if self.elbo == "trace" and self.analytic_kl and not reparameterised:
            bad = [n for n, s in sites.items() if not s["fn"].has_rsample]
            raise ValueError(f"svi with elbo='trace' and analytic_kl (TraceMeanField_ELBO) does not apply to "
                             f"{ae.name}: "
                             f"its guide sites {bad} are not reparameterised; use elbo='traceenum' (exact sums over "
                             "discrete sites), elbo='tracegraph' or analytic_kl=False (score-function estimators)")
        if self.elbo == "trace" and self.analytic_kl and len(sites) > 1:
            guide_tr = poutine.trace(ae.guide).get_trace(*batch)
            model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*batch)
            order = [n for n in model_tr.nodes if n in sites]
            guide_order = [n for n in sites if n in model_tr.nodes]  # autoguides' auxiliary sites are not the model's
            if order != guide_order:  # Pyro's own sufficient check of the mean-field requirement
                raise ValueError(f"svi with analytic_kl (TraceMeanField_ELBO) does not apply to {ae.name}: its model "
                                 f"samples {order} but its guide {guide_order}, so the guide is not mean field and "
                                 "closed-form KL terms would be biased; use analytic_kl=false (Trace_ELBO)")
        if self.beta == 0 and not reparameterised:
            raise ValueError("svi with beta=0 needs reparameterised guide sites (rsample): masking the latent "
                             "terms would drop their score-function gradients")
        KLWarmup(self.kl_warmup_epochs).check(ae, *batch)
        if self.capacity_term() is not None:
            self.capacity_term().check(ae, *batch)
        if self.penalty is not None:
            self.penalty_term().check(ae, *batch)


ENGINE = SVI
