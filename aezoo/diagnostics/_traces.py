"""Private helpers of the diagnostics: evaluation mode, chunking over data and particles.

Every diagnostic traces the guide under a ``"particles"`` plate left of the model's plates and
replays the model on its draws (:func:`aezoo.traces.trace_pair`, shared with the
IWAE engine), chunk by chunk so memory stays bounded, and reads per-datum quantities off the
two traces.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor

from aezoo.checks import integer
from aezoo.core import Autoencoder, check_lengths, rows, to_device
from aezoo.traces import Traces, trace_pair


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


def batches(ae: Autoencoder, data: tuple, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, ...]]:
    """Consecutive chunks of ``batch_size`` rows of every data tensor (as :meth:`Autoencoder.prepare` makes
    them), moved to ``device``."""
    integer("batch_size", batch_size)
    data = ae.prepare(*data)
    for start in range(0, check_lengths(data), batch_size):
        yield to_device(rows(data, slice(start, start + batch_size)), device)


def particle_chunks(num_particles: int, per_particle: int, max_elements: int) -> list[int]:
    """Split ``num_particles`` into chunks of at most ``max_elements // per_particle`` (at least 1)."""
    integer("num_particles", num_particles)
    chunk = max(1, min(num_particles, max_elements // max(per_particle, 1)))
    return [min(chunk, num_particles - k) for k in range(0, num_particles, chunk)]


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
        for batch in batches(ae, data, batch_size, device):
            sums: dict[str, Tensor] = {}
            for k in particle_chunks(num_particles, len(batch[0]) * max(batch[0][0].numel(), 1), max_elements):
                for name, t in stats(trace_pair(ae, *batch, num_particles=k)).items():
                    sums[name] = sums[name] + t.sum(0) if name in sums else t.sum(0)
            for name, t in sums.items():
                out.setdefault(name, []).append((t / num_particles).cpu())
    return {name: torch.cat(v) for name, v in out.items()}
