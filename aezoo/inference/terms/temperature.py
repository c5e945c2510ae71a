"""The Gumbel-softmax relaxation of one-hot latent sites, with its annealed temperature.

Models state categorical latents as exact one-hot sites (:func:`aezoo.guides.categorical.one_hot`);
the relaxation is part of the objective, like a gradient estimator: inside :meth:`Relaxation.applied`
(a Pyro messenger) every latent one-hot site of the model and of the guide samples from its
Gumbel-softmax relaxation at the temperature ``tau_t`` instead ([1]; :class:`~aezoo.guides.categorical.GumbelSoftmax`,
or its straight-through form, one-hot forward and relaxed gradient). With ``svi``'s ``analytic_kl``
the ELBO's KL stays the exact categorical KL of the discrete model (the KL registered between two
relaxations, [1]'s objective), so ``loss`` is ``-(E_{y ~ q_tau}[log p(x | y)] - KL(q(z | x) || p(z)))``
per datum: the discrete model's negative ELBO with its reconstruction term taken at relaxed codes
(biased by the relaxation; with the straight-through form the decoder sees exact one-hot draws from
``q``, so the value is an unbiased estimate of the discrete negative ELBO and only the gradient is
biased). With ``analytic_kl=False`` it is the relaxed model's negative ELBO ([2]). Outside the
relaxation (every diagnostic, ``rws``, ``svi`` with ``elbo="tracegraph"`` and no relaxation) the
sites are the discrete ones.

The schedule of [1] (Sec. 4.2, appendix): ``tau_t = max(tau, initial * exp(-rate * t_N))`` at global
step ``t``, updated every ``every`` steps (``t_N = every * floor(t / every)``; [1]: ``rate`` 1e-5 or
1e-4, ``every`` 500, ``tau = 0.5``, ``initial = 1``). The step is the loop's published progress
``e`` (epochs, fractional; :func:`aezoo.inference.objectives.current_epoch`) times the engine's
steps per epoch, so the schedule is the per-step one whatever the epoch length. ``rate = 0`` keeps
``tau`` constant ([3] uses 0.67); outside a fit the temperature is the final ``tau``.
The temperature is no model parameter: the messenger passes it to the sites it relaxes, so guides
and models (below ``inference``) never read the schedule.

References:
    1. Categorical Reparameterization with Gumbel-Softmax, Jang, Gu & Poole, arXiv:1611.01144.
    2. The Concrete Distribution, Maddison, Mnih & Teh, arXiv:1611.00712.
    3. Learning Disentangled Joint Continuous and Discrete Representations, Dupont, arXiv:1804.00104.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyro.poutine.messenger import Messenger
from torch import Tensor

from aezoo.checks import integer, positive
from aezoo.core import Autoencoder, config_with, key_values
from aezoo.guides.categorical import is_one_hot, relaxed
from aezoo.progress import current_epoch
from aezoo.traces import guide_sites

RELAXATIONS = {"gumbel_softmax": False, "straight_through": True}  # name -> straight_through


class Relax(Messenger):
    """Replace the distribution of every latent one-hot sample site by its relaxation at ``temperature``."""

    def __init__(self, temperature: float, straight_through: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.straight_through = straight_through

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            fn = relaxed(msg["fn"], self.temperature, self.straight_through)
            if fn is not None:
                msg["fn"] = fn


@dataclass(frozen=True)
class Relaxation:
    """The relaxation and its temperature schedule; the fields are ``svi``'s ``relaxation_options``.

    Attributes:
        straight_through: one-hot forward, relaxed gradient (set by ``relaxation="straight_through"``).
        temperature: the final temperature ``tau`` (> 0), used outside a fit.
        rate: ``r`` per step (>= 0; 0: constant ``tau``).
        every: steps between temperature updates (``N``, >= 1).
        initial: the temperature at step 0 (> 0).
    """

    straight_through: bool = False
    temperature: float = 0.5
    rate: float = 0.0
    every: int = 500
    initial: float = 1.0

    def __post_init__(self) -> None:
        positive("temperature", self.temperature)
        positive("rate", self.rate, allow_zero=True)
        integer("every", self.every)
        positive("initial", self.initial)

    def value(self, steps_per_epoch: int) -> float:
        """``tau_t`` at the current progress, with ``steps_per_epoch`` optimiser steps per epoch."""
        epoch = current_epoch()
        if epoch is None or self.rate == 0:
            return self.temperature
        step = math.floor(max(epoch, 0.0) * steps_per_epoch + 1e-9)
        return max(self.temperature, self.initial * math.exp(-self.rate * self.every * (step // self.every)))

    def applied(self, steps_per_epoch: int) -> Relax:
        """The messenger relaxing one-hot sites at :meth:`value`; use it as a context around model and guide."""
        return Relax(self.value(steps_per_epoch), self.straight_through)

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` ("does not apply") when the guide has no one-hot latent site to relax."""
        if not any(is_one_hot(s["fn"]) for s in guide_sites(ae, *batch).values()):
            raise ValueError(f"the Gumbel-softmax relaxation does not apply to {ae.name}: it has no one-hot "
                             "categorical latent site (OneHotCategorical)")


def make_relaxation(name: str, options: tuple[str, ...] = ()) -> Relaxation:
    """The relaxation ``name`` (a key of :data:`RELAXATIONS`) with ``options`` (``"field=value"`` texts).

    Raises:
        ValueError: unknown name, option or value.
    """
    if name not in RELAXATIONS:
        raise ValueError(f"unknown relaxation {name!r}; choose one of {sorted(RELAXATIONS)} or none")
    pairs = key_values(options, "relaxation_options", "temperature=0.5")
    if "straight_through" in pairs:
        raise ValueError("choose the straight-through form with relaxation=straight_through, not an option")
    return config_with(Relaxation(RELAXATIONS[name]), pairs, "engine.relaxation_options ")
