"""Trace and replay, below engines and diagnostics: guide and model traces with vectorised particles.

Pyro's ``vectorized_importance_weights`` sums over the batch; here a ``"particles"`` plate sits
left of the ``"data"`` plate and nothing is summed across data points, so per-datum bounds and
log-likelihoods follow by a logsumexp over particles alone ("Importance Weighted Autoencoders",
Burda, Grosse & Salakhutdinov, arXiv:1509.00519).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder, rows


def max_plate_nesting(ae: Autoencoder, *data: Tensor) -> int:
    """How many batch dims the model and guide use (their plates), found by one trace; cached."""
    cached = getattr(ae, "_max_plate_nesting", None)
    if cached is not None:
        return cached
    probe = rows(data, slice(0, 2))
    with torch.random.fork_rng(devices=[probe[0].device] if probe[0].is_cuda else []):  # leave the RNG as it was
        guide_tr = poutine.trace(ae.guide).get_trace(*probe)
        model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*probe)
    dims = [-f.dim for tr in (guide_tr, model_tr) for s in tr.nodes.values() if s["type"] == "sample"
            for f in s["cond_indep_stack"] if f.vectorized]
    ae._max_plate_nesting = max(dims, default=0)
    return ae._max_plate_nesting


def data_dim(name: str, site: dict) -> int:
    """The (negative) batch dim of the ``"data"`` plate at ``site``; ``ValueError`` for global sites."""
    dims = [f.dim for f in site["cond_indep_stack"] if f.name == "data"]
    if not dims:
        raise ValueError(f"site {name!r} is outside the 'data' plate; per-datum importance weights "
                         "and diagnostics need local latents")
    return dims[0]


@dataclass
class Traces:
    """A guide trace and the model trace replayed on it, ``K`` particles by ``B`` data.

    Attributes:
        guide: pruned guide trace (no subsample sites), or ``None``.
        model: pruned model trace, or ``None``.
        nesting: plate dims of model and guide, not counting the particles plate.
        num_particles: ``K``.
        batch_size: ``B``.
        device: where the data and traces live.
    """

    guide: Trace | None
    model: Trace | None
    nesting: int
    num_particles: int
    batch_size: int
    device: torch.device

    @property
    def latent(self) -> list[str]:
        """Names of the guide's non-observed sample sites, in trace order."""
        return [n for n, s in self.guide.nodes.items() if s["type"] == "sample" and not s["is_observed"]]

    @property
    def observed(self) -> list[str]:
        """Names of the model's observed sample sites, in trace order."""
        return [n for n, s in self.model.nodes.items() if s["type"] == "sample" and s["is_observed"]]

    def per_datum(self, t: Tensor, name: str, site: dict, event_dims: int = 0) -> Tensor:
        """``t`` (a site's batch shape then ``event_dims`` dims) as ``(K, B, D)``: particles, data, the rest.

        ``D`` flattens, in C order, the site's other plate dims then its event dims (1 when none).
        """
        pad = self.nesting + 1 - (t.dim() - event_dims)
        t = t.reshape((1,) * max(pad, 0) + t.shape)
        t = t.movedim(t.dim() - event_dims + data_dim(name, site), 1)
        t = t.expand(self.num_particles, self.batch_size, *t.shape[2:])
        return t.reshape(self.num_particles, self.batch_size, -1)

    def masked(self, t: Tensor, site: dict, event_dims: int = 0) -> Tensor:
        """``t`` set to 0 where the site's mask (batch shape) is False."""
        mask = site["mask"]
        if mask is None or mask is True:
            return t
        if mask is False:
            return torch.zeros_like(t)
        return torch.where(mask.reshape(mask.shape + (1,) * event_dims), t, t.new_zeros(()))

    def log_prob(self, trace: Trace, names: list[str]) -> Tensor:
        """``(K, B)`` sum of the (masked, unscaled) log-densities of ``names`` in ``trace``, nats."""
        terms = [self.per_datum(self.masked(s["fn"].log_prob(s["value"]), s), n, s).sum(-1)
                 for n, s in ((n, trace.nodes[n]) for n in names)]
        if not terms:
            return torch.zeros(self.num_particles, self.batch_size, device=self.device)
        return sum(terms[1:], terms[0])


def trace_pair(
    ae: Autoencoder,
    *batch: Tensor,
    num_particles: int,
    guide: bool = True,
    model: bool = True,
    uncondition: bool = False,
    condition: dict[str, Tensor] | None = None,
    num_data: int | None = None,
) -> Traces:
    """Trace the guide under a ``"particles"`` plate and replay the model on its draws.

    Args:
        ae: the autoencoder.
        batch: ``x`` ``(B, D_x)`` then covariates.
        num_particles: ``K``.
        guide: trace the guide; without it the model draws its latents from the prior.
        model: trace the model (``Traces.model`` is ``None`` otherwise).
        uncondition: sample the model's observed sites instead of scoring the data (replicates).
        condition: site -> value the guide's sites take instead of sampling, ``(K, ..., B, ...)``.
        num_data: ``N`` for the ``"data"`` plates of model and guide.
    """
    nesting = max_plate_nesting(ae, *batch)
    guide_fn = poutine.condition(ae.guide, data=condition) if condition else ae.guide
    model_fn = poutine.uncondition(ae.model) if uncondition else ae.model
    guide_tr = model_tr = None
    with pyro.plate("particles", num_particles, dim=-nesting - 1):
        if guide:
            guide_tr = prune_subsample_sites(poutine.trace(guide_fn).get_trace(*batch, num_data=num_data))
            model_fn = poutine.replay(model_fn, trace=guide_tr)
        if model:
            model_tr = prune_subsample_sites(poutine.trace(model_fn).get_trace(*batch, num_data=num_data))
    return Traces(guide_tr, model_tr, nesting, num_particles, len(batch[0]), batch[0].device)


def log_weights(ae: Autoencoder, *data: Tensor, num_particles: int, num_data: int | None = None) -> Tensor:
    """Importance log-weights per particle and datum, differentiable (reparameterised guides).

    Args:
        ae: an autoencoder whose latent sites all lie inside the ``"data"`` plate.
        data: ``x`` ``(B, D_x)`` then covariates.
        num_particles: ``K``.
        num_data: ``N`` passed to model and guide; it changes their plate scale, not the weights.

    Returns:
        ``(K, B)`` log-weights in nats: log p(x_b, z) - log q(z | x_b), masks applied, plate
        scales ignored.

    Raises:
        ValueError: a sample site outside the ``"data"`` plate (a global latent): its log-density
            cannot be split per datum, so per-datum weights do not exist.
    """
    tr = trace_pair(ae, *data, num_particles=num_particles, num_data=num_data)
    model_sites = [n for n, s in tr.model.nodes.items() if s["type"] == "sample"]
    return tr.log_prob(tr.model, model_sites) - tr.log_prob(tr.guide, tr.latent)


def guide_sites(ae: Autoencoder, *batch: Tensor) -> dict[str, dict]:
    """The guide's latent sample sites (name -> trace site), traced once on ``batch``."""
    tr = prune_subsample_sites(poutine.trace(ae.guide).get_trace(*batch))
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]}


def check_weights_exist(ae: Autoencoder, engine: str, *batch: Tensor) -> dict[str, dict]:
    """Raise ``ValueError`` unless per-datum importance weights exist for ``ae``; return its guide sites.

    They need a density over z (no point-mass guide sites: "does not apply") and local latents
    (inside the ``"data"`` plate).
    """
    sites = guide_sites(ae, *batch)
    for name, site in sites.items():
        try:
            data_dim(name, site)
        except ValueError as err:
            raise ValueError(f"the {engine} engine does not apply to {ae.name}: it supports local latents only "
                             f"(per-datum importance weights; use svi for global latents): {err}") from err
    points = [n for n, s in sites.items() if is_deterministic(s["fn"])]
    if points:
        raise ValueError(f"the {engine} engine does not apply to {ae.name}: its guide sites {points} are point masses "
                         "(Delta), whose log q = 0 is no density over z, so importance weights are meaningless "
                         "(use --engine svi)")
    return sites


def is_deterministic(fn) -> bool:
    """True for a point mass (``Delta``), also inside ``Independent``/``Expanded``/``Masked`` wrappers."""
    while not isinstance(fn, pyro.distributions.Delta):
        fn = getattr(fn, "base_dist", None)
        if fn is None:
            return False
    return True
