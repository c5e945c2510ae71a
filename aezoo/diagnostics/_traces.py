"""Private helpers of the diagnostics: chunked traces of guide and model with a particles plate.

Every diagnostic traces the guide under a ``"particles"`` plate left of the model's plates,
replays the model on the guide's draws and reads per-datum quantities off the two traces. The
helpers here do that once, generically over site names: latent sites are the guide's
non-observed sample sites, observed sites are the model's, and each site's ``"data"`` plate
dimension is read from its ``cond_indep_stack``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import pyro
import torch
from pyro import poutine
from pyro.poutine import Trace
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.inference.importance import max_plate_nesting


@contextmanager
def evaluating(ae: Autoencoder) -> Iterator[torch.device]:
    """``no_grad`` and ``eval()`` for the block (the training flag is restored); yields ``ae``'s device."""
    was_training = ae.training
    ae.eval()
    try:
        with torch.no_grad():
            yield next(ae.parameters()).device
    finally:
        ae.train(was_training)


def batches(data: tuple[Tensor, ...], batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, ...]]:
    """Consecutive chunks of ``batch_size`` rows of every data tensor, moved to ``device``."""
    if not data:
        raise ValueError("diagnostics need at least the data tensor x")
    for start in range(0, len(data[0]), batch_size):
        yield tuple(d[start : start + batch_size].to(device) for d in data)


def particle_chunks(num_particles: int, per_particle: int, max_elements: int) -> list[int]:
    """Split ``num_particles`` into chunks of at most ``max_elements // per_particle`` (at least 1)."""
    chunk = max(1, min(num_particles, max_elements // max(per_particle, 1)))
    return [min(chunk, num_particles - k) for k in range(0, num_particles, chunk)]


def data_dim(name: str, site: dict) -> int:
    """The (negative) batch dim of the ``"data"`` plate at ``site``; ``ValueError`` for global sites."""
    dims = [f.dim for f in site["cond_indep_stack"] if f.name == "data"]
    if not dims:
        raise ValueError(f"site {name!r} is outside the 'data' plate; per-datum diagnostics need local latents")
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
    """
    nesting = max_plate_nesting(ae, *batch)
    guide_fn = poutine.condition(ae.guide, data=condition) if condition else ae.guide
    model_fn = poutine.uncondition(ae.model) if uncondition else ae.model
    guide_tr = model_tr = None
    with pyro.plate("particles", num_particles, dim=-nesting - 1):
        if guide:
            guide_tr = prune_subsample_sites(poutine.trace(guide_fn).get_trace(*batch))
            model_fn = poutine.replay(model_fn, trace=guide_tr)
        if model:
            model_tr = prune_subsample_sites(poutine.trace(model_fn).get_trace(*batch))
    return Traces(guide_tr, model_tr, nesting, num_particles, len(batch[0]), batch[0].device)


def particle_means(ae: Autoencoder, data: tuple[Tensor, ...], num_particles: int, batch_size: int,
                   max_elements: int, stats: Callable[[Traces], dict[str, Tensor]]) -> dict[str, Tensor]:
    """Trace every chunk of data and particles, reduce it with ``stats``, average over particles.

    Args:
        ae, data: the autoencoder and ``x`` ``(N, D_x)`` then covariates.
        num_particles: ``K`` draws per datum, traced in chunks of at most
            ``max_elements // (B * D_x)``.
        batch_size: ``B`` data per chunk.
        stats: :class:`Traces` -> name -> ``(k, B, ...)`` tensor.

    Returns:
        name -> ``(N, ...)`` mean over the ``K`` particles, on the CPU.
    """
    out: dict[str, list[Tensor]] = {}
    with evaluating(ae) as device:
        for batch in batches(data, batch_size, device):
            sums: dict[str, Tensor] = {}
            for k in particle_chunks(num_particles, len(batch[0]) * max(batch[0][0].numel(), 1), max_elements):
                for name, t in stats(trace_pair(ae, *batch, num_particles=k)).items():
                    sums[name] = sums[name] + t.sum(0) if name in sums else t.sum(0)
            for name, t in sums.items():
                out.setdefault(name, []).append((t / num_particles).cpu())
    return {name: torch.cat(v) for name, v in out.items()}
