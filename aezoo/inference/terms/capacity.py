"""The capacity-controlled beta-VAE objective: pull each datum's KL towards a growing capacity C.

``-E_q[log p(x | z)] + gamma * |KL(q(z | x) || p(z)) - C_e|`` per datum, with ``C_e =
capacity_max * min(1, e / epochs)`` nats at training progress ``e`` [1]. The KL of each datum
(closed form with ``analytic_kl`` where registered, else ``log q(z) - log p(z)`` at the draw,
averaged over the particles) comes from one trace of guide and model (no score-function terms),
so the objective needs reparameterised guide sites inside the ``"data"`` plate. [1] applies
``|.|`` to the minibatch-mean KL; here it applies per datum, so the loss estimates the
objective's mean over the data whatever the batch size.

Separate capacities per site ([2]: JointVAE's ``C_z`` for the continuous and ``C_c`` for the
discrete latent): ``sites`` names sites with a capacity of their own, ``"name=C_max:epochs"``
texts (``:epochs`` optional, default ``epochs``); the loss is then
``-E_q[log p(x | z)] + gamma * sum_g |KL_g - C_g|`` over those sites and, pooled into one group
under ``capacity_max``, the other latent sites.

References:
    1. Understanding disentangling in beta-VAE, Burgess, Higgins, Pal, Matthey, Watters,
       Desjardins & Lerchner, arXiv:1804.03599.
    2. Learning Disentangled Joint Continuous and Discrete Representations, Dupont, arXiv:1804.00104.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.objectives import site_kls
from aezoo.progress import ramp
from aezoo.traces import data_dim, guide_sites, trace_pair


def capacity_loss(rec: Tensor, kl: Tensor, capacity: float, gamma: float) -> Tensor:
    """Negative capacity objective of [1] per datum, averaged over the ``K`` particles and ``B`` data.

    Args:
        rec: ``(K, B)`` reconstruction log-likelihoods, nats.
        kl: ``(K, B)`` KL terms, nats; averaged over particles before the absolute value.
        capacity: ``C`` in nats.
        gamma: the weight of the capacity term.
    """
    return -rec.mean() + gamma * (kl.mean(0) - capacity).abs().mean()


def parse_sites(texts: tuple[str, ...], epochs: float) -> dict[str, tuple[float, float]]:
    """``("z_c=2.3:12", ...)`` as site -> ``(C_max, epochs)``; ``epochs`` where a text has none.

    Raises:
        ValueError: a text without ``=``, an unreadable number, a negative or infinite capacity or
            negative epochs, or a site named twice.
    """
    out = {}
    for text in texts:
        name, sep, value = text.partition("=")
        cap, _, span = value.partition(":")
        try:
            values = (float(cap), float(span) if span.strip() else float(epochs))
        except ValueError:
            values = None
        if not sep or values is None or not name.strip():
            raise ValueError(f"capacity_sites takes 'site=C_max' or 'site=C_max:epochs' texts, e.g. 'z_c=2.3:12'; "
                             f"got {text!r}")
        if not (0 <= values[0] < float("inf") and 0 <= values[1] < float("inf")):
            raise ValueError(f"capacity_sites {text!r}: C_max and epochs must be non-negative and finite")
        if name.strip() in out:
            raise ValueError(f"capacity_sites names {name.strip()!r} twice")
        out[name.strip()] = values
    return out


@dataclass(frozen=True)
class Capacity:
    """The objective's settings.

    Attributes:
        capacity_max: the final capacity ``C`` (nats, >= 0) of the latent sites not in ``sites``; None
            when ``sites`` names every latent site.
        epochs: epochs over which ``C`` grows linearly from 0 (0: constant).
        gamma: the weight (> 0) of ``|KL - C|`` (1000 in [1], 30 in [2]).
        analytic_kl: closed-form KL terms where registered.
        sites: ``"site=C_max[:epochs]"`` texts: sites with a capacity of their own (:func:`parse_sites`).
    """

    capacity_max: float | None
    epochs: int = 0
    gamma: float = 1000.0
    analytic_kl: bool = True
    sites: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.capacity_max is None and not self.sites:
            raise ValueError("the capacity objective needs capacity_max or capacity_sites")
        if self.capacity_max is not None and not 0 <= self.capacity_max < float("inf"):
            raise ValueError(f"capacity_max must be non-negative and finite, got {self.capacity_max}")
        if not (isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 0):
            raise ValueError(f"capacity_epochs must be a non-negative integer, got {self.epochs!r}")
        if not 0 < self.gamma < float("inf"):
            raise ValueError(f"gamma must be positive and finite, got {self.gamma}")
        parse_sites(self.sites, self.epochs)  # validates

    def capacity(self) -> float:
        """``C_e`` in nats at the current training progress (``capacity_max`` outside a fit); 0 without one."""
        return (self.capacity_max or 0.0) * ramp(self.epochs)

    def site_capacities(self) -> dict[str, float]:
        """Site -> its own ``C_e`` in nats at the current progress (its ``C_max`` outside a fit)."""
        return {name: cap * ramp(span) for name, (cap, span) in parse_sites(self.sites, self.epochs).items()}

    def loss(self, ae: Autoencoder, *batch: Tensor, num_particles: int, num_data: int):
        """The negative objective per datum and the traces it used (for penalties on the same draws)."""
        tr = trace_pair(ae, *batch, num_particles=num_particles, num_data=num_data)
        kls = site_kls(tr, self.analytic_kl)
        rec = tr.log_prob(tr.model, tr.observed)
        own = self.site_capacities()
        missing = sorted(set(own) - set(kls))
        if missing:
            raise ValueError(f"capacity_sites names {missing}, which are not latent sites of {ae.name} "
                             f"(its latent sites: {sorted(kls)})")
        pooled = [kl for name, kl in kls.items() if name not in own]
        if pooled and self.capacity_max is None:
            raise ValueError(f"capacity_sites leaves the latent sites {sorted(set(kls) - set(own))} of {ae.name} "
                             "without a capacity: name them too or set capacity_max")
        if not own:  # one capacity for all sites: the objective of [1]
            kl = sum(pooled[1:], pooled[0]) if pooled else torch.zeros_like(rec)
            return capacity_loss(rec, kl, self.capacity(), self.gamma), tr
        groups = [(kls[name], c) for name, c in own.items()]
        if pooled:
            groups.append((sum(pooled[1:], pooled[0]), self.capacity()))
        value = -rec.mean() + self.gamma * sum((kl.mean(0) - c).abs().mean() for kl, c in groups)
        return value, tr

    def check(self, ae: Autoencoder, *batch: Tensor) -> None:
        """``ValueError`` for non-reparameterised guide sites or a latent outside the ``"data"`` plate."""
        sites = guide_sites(ae, *batch)
        if not all(s["fn"].has_rsample for s in sites.values()):
            raise ValueError("svi with capacity_max needs reparameterised guide sites (rsample)")
        for name, site in sites.items():
            data_dim(name, site)  # ValueError for a global latent: its KL is not per datum
        own = set(parse_sites(self.sites, self.epochs))
        if own - set(sites) or (self.capacity_max is None and set(sites) - own):
            raise ValueError(f"capacity_sites {sorted(own)} do not fit {ae.name}'s latent sites {sorted(sites)}: "
                             "name only its sites, and all of them unless capacity_max is set")
