"""Reweighted wake-sleep (RWS): importance-weighted learning that never differentiates through z.

For each datum ``x_b`` of a minibatch, ``K`` particles ``z_k ~ q(z | x_b)`` are drawn without
gradients (``z`` is a constant; discrete latents need no reparameterisation), with log-weights
``log w_k = log p(x_b, z_k) - log q(z_k | x_b)`` and normalised weights ``w~_k = softmax_k log w_k``
(treated as constants). The updates of [1], as analysed in [2]:

* wake-theta (model parameters ``theta``): ascend ``sum_k w~_k log p_theta(x_b, z_k)``, whose
  gradient is the ``theta``-gradient of ``IWAE_K`` [3] (a self-normalised estimate of
  ``d log p(x) / d theta``).
* wake-phi (guide parameters ``phi``, ``wake_phi="wake"``): ascend ``sum_k w~_k log q_phi(z_k | x_b)``,
  a self-normalised estimate of ``-d KL(p(z | x) || q(z | x)) / d phi`` (inclusive KL, so the
  guide covers the posterior's mass; [2] shows it is what makes RWS work with discrete latents
  and stochastic control flow).
* sleep-phi (``wake_phi="sleep"``): ascend ``log q_phi(z | x)`` at fantasies ``(z, x) ~ p_theta``
  drawn with the minibatch's shapes (and covariates), a stochastic step on
  ``-E_{p(x)} KL(p(z | x) || q(z | x))`` over the model's own data. ``"both"``: the sum of the
  wake and sleep guide objectives.

``loss`` returns one scalar per step: its gradient is the wake-theta update for the model's
parameters and the chosen phi update for the guide's (a parameter in both gets both), all per
datum and averaged over the minibatch, so ``num_data`` changes only the plate scales, never the
loss. Its value is ``-IWAE_K`` per datum on the wake draws (minibatch mean), so
``FitResult.losses`` are negative importance-weighted bounds in nats per datum. RWS follows no
single objective: that recorded bound need not rise monotonically.

Requirements (``check``): every latent is local (inside the ``"data"`` plate) and the guide has
no point-mass (Delta) sites; any guide distribution that can be sampled works, discrete or not.

References:
    1. Reweighted Wake-Sleep, Bornschein & Bengio, arXiv:1406.2751.
    2. Revisiting Reweighted Wake-Sleep for Models with Stochastic Control Flow, Le, Kosiorek,
       Siddharth, Teh & Wood, arXiv:1805.10469.
    3. Importance Weighted Autoencoders, Burda, Grosse & Salakhutdinov, arXiv:1509.00519.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.iwae import iwae_bound
from aezoo.inference.loop import GradientEngine
from aezoo.traces import Traces, check_weights_exist, max_plate_nesting

PHI_UPDATES = ("wake", "sleep", "both")


def detached_traces(ae: Autoencoder, *batch: Tensor, num_particles: int, num_data: int | None = None) -> Traces:
    """Guide and model traces at ``K`` guide draws that carry no gradient.

    The guide is sampled under ``torch.no_grad``, then re-run replaying those draws (so its
    distributions depend on ``phi`` but its values do not) and the model is replayed on them.
    """
    nesting = max_plate_nesting(ae, *batch)
    with pyro.plate("particles", num_particles, dim=-nesting - 1):
        with torch.no_grad():
            draws = prune_subsample_sites(poutine.trace(ae.guide).get_trace(*batch, num_data=num_data))
        guide_tr = prune_subsample_sites(
            poutine.trace(poutine.replay(ae.guide, trace=draws)).get_trace(*batch, num_data=num_data))
        model_tr = prune_subsample_sites(
            poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*batch, num_data=num_data))
    return Traces(guide_tr, model_tr, nesting, num_particles, len(batch[0]), batch[0].device)


@dataclass(frozen=True)
class RWS(GradientEngine):
    """Reweighted wake-sleep; ``loss`` has the RWS gradients and the value ``-IWAE_K`` per datum.

    Attributes:
        num_particles: importance samples ``K`` per datum.
        wake_phi: the guide update: ``"wake"`` (wake-phi), ``"sleep"`` (sleep-phi) or ``"both"``.
    """

    num_particles: int = 5
    wake_phi: str = "wake"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be at least 1, got {self.num_particles}")
        if self.wake_phi not in PHI_UPDATES:
            raise ValueError(f"unknown wake_phi {self.wake_phi!r}; choose one of {PHI_UPDATES}")

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        tr = detached_traces(ae, *batch, num_particles=self.num_particles, num_data=num_data)
        log_p = tr.log_prob(tr.model, [n for n, s in tr.model.nodes.items() if s["type"] == "sample"])
        log_q = tr.log_prob(tr.guide, tr.latent)  # (K, B); z is a constant in both
        log_w = log_p - log_q
        value = -iwae_bound(log_w.detach()).mean()
        w = torch.softmax(log_w.detach(), dim=0)
        objective = (w * log_p).sum(0).mean()  # wake-theta; log_p depends on phi not at all
        if self.wake_phi != "sleep":
            objective = objective + (w * log_q).sum(0).mean()  # wake-phi
        if self.wake_phi != "wake":
            objective = objective + self.sleep_log_q(ae, *batch, num_data=num_data).mean()
        return value + (objective.detach() - objective)

    def sleep_log_q(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        """``(B,)`` log q(z | x) at ``B`` fantasies ``(z, x) ~ p(z, x)`` (with the batch's covariates)."""
        nesting = max_plate_nesting(ae, *batch)
        with torch.no_grad():
            dream = prune_subsample_sites(poutine.trace(poutine.uncondition(ae.model)).get_trace(*batch,
                                                                                               num_data=num_data))
        x = dream.nodes["x"]["value"]
        guide_tr = prune_subsample_sites(
            poutine.trace(poutine.replay(ae.guide, trace=dream)).get_trace(x, *batch[1:], num_data=num_data))
        tr = Traces(guide_tr, None, nesting, 1, len(x), x.device)
        return tr.log_prob(guide_tr, tr.latent)[0]

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` for point-mass guide sites ("does not apply") or latents outside the data plate."""
        check_weights_exist(ae, "rws", *batch)

ENGINE = RWS
