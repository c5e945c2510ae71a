"""The optimiser step of the gradient loop, with its guarantees, with or without a host sync per step.

Guarantees: a step whose loss is NaN, infinite or past the divergence bound, or whose gradient is NaN
or infinite, is never applied, and the fit stops with :class:`aezoo.inference.loop.Diverged`.

* ``eager`` (CPU, where reading a value is free): every step's loss is read at once and checked before
  the backward pass, the gradient norm before the step; the epoch loss is a Python float. This is the
  loop's behaviour on CPU, unchanged.
* ``deferred`` (CUDA): nothing is read back per step. The checks become flags on the device (sticky:
  once one is set, no later step of the fit is applied either), handed to a fused optimiser as its
  ``found_inf`` (the mechanism ``torch.amp.GradScaler`` uses to skip a step on the device), and the
  epoch loss is accumulated on the device. The loop reads the flags when the progress bar refreshes and
  at the end of every epoch and raises there; the parameters are those before the first bad step and
  the checkpoint holds the last good epoch. With float16 mixed precision the ``GradScaler``'s own
  overflow skips are normal and not a divergence; a flagged step is skipped through it by making the
  gradients infinite.

Under data parallelism (:mod:`aezoo.inference.distributed`) the loss read and checked is the global
batch's, summed over the ranks, so every rank takes the same decision.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from aezoo.inference import distributed


def fused(optim: torch.optim.Optimizer, params: list) -> torch.optim.Optimizer | None:
    """The same optimiser and settings with ``fused=True`` (which can skip a step on the device), or None."""
    if "fused" not in optim.defaults:
        return None
    return type(optim)(params, **{**optim.defaults, "fused": True, "foreach": None})


class Stepper:
    """Checks, backward pass, clipping and step of one minibatch; the running epoch loss.

    Args:
        engine: the :class:`aezoo.inference.loop.GradientEngine` (its bound, clipping and messages).
        params: the parameters ``optim`` steps.
        optim: the optimiser; in ``deferred`` mode a fused one (see :func:`fused`).
        start: the loss at the start of the fit (nats per datum), for the divergence bound.
        deferred: read nothing back per step (module docstring).
        scaler: a float16 ``GradScaler`` (deferred mode only) or None.
    """

    def __init__(self, engine, params: list, optim: torch.optim.Optimizer, start: float, deferred: bool,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        if scaler is not None and not deferred:
            raise ValueError("float16 loss scaling runs in the deferred (CUDA) mode only")
        self.engine, self.params, self.optim, self.start = engine, params, optim, start
        self.deferred, self.scaler = deferred, scaler
        self.bound = start + engine.divergence_factor * (abs(start) + 1)
        self.checks_bound = bool(engine.divergence_factor) and math.isfinite(start)
        self.flags: Tensor | None = None  # deferred: (3,) non-finite loss, past the bound, non-finite gradient
        self.fault: Tensor | None = None  # deferred: the loss of the first flagged step
        self.new_epoch()

    def new_epoch(self) -> None:
        self.total: float | Tensor = 0.0
        self.seen = 0

    def step(self, loss: Tensor, weight: float, size: int, epoch: int) -> None:
        """One step on a minibatch of ``size`` data (global, over the ranks) whose mean loss here is ``loss``.

        Args:
            loss: this rank's mean loss over its share, differentiable.
            weight: the share's weight (:func:`aezoo.inference.distributed.shard`; 1 in one process).
            size: the data in the (global) minibatch.
            epoch: 0-based, for messages.
        """
        mean = loss.detach()
        if distributed.active():
            mean = distributed.all_sum(mean * (weight * size / distributed.world_size())) / size
        scaled = loss if weight == 1.0 else loss * weight
        if not self.deferred:
            value = mean.item()
            self.engine._check_step(value, self.start, epoch)
            self.optim.zero_grad(set_to_none=True)
            scaled.backward()
            norm = self._clip()
            if not torch.isfinite(norm):
                self.engine._stop(f"a gradient became NaN or infinite in epoch {epoch + 1} (the step was not applied)")
            self.optim.step()
            self.total, self.seen = self.total + value * size, self.seen + size
            return
        self.optim.zero_grad(set_to_none=True)
        (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        over = mean > self.bound if self.checks_bound else torch.zeros((), dtype=torch.bool, device=mean.device)
        if self.scaler is not None:  # its overflow skips are its own; a flagged loss is skipped through it
            bad = self._flag(mean, over, torch.zeros_like(over))
            poison = torch.where(bad > 0, math.inf, 0.0)
            for p in self.params:
                if p.grad is not None:
                    p.grad.add_(poison.to(p.grad.dtype))
            self.scaler.unscale_(self.optim)  # records the (poisoned) gradients' non-finite flag
            torch.nn.utils.clip_grad_norm_(self.params, self.engine.clip_norm or math.inf)
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            norm = self._clip()
            self.optim.grad_scale, self.optim.found_inf = None, self._flag(mean, over, ~torch.isfinite(norm))
            try:
                self.optim.step()
            finally:
                del self.optim.grad_scale, self.optim.found_inf
        self.total, self.seen = self.total + mean * size, self.seen + size

    def _clip(self) -> Tensor:
        """Clip the gradients to ``clip_norm``; their global 2-norm before (non-finite for a NaN or infinite one).

        Without clipping only the norm is computed (:func:`torch.nn.utils.get_total_norm`, the same value
        ``clip_grad_norm_`` returns), sparing its multiplication of every gradient by 1.
        """
        if self.engine.clip_norm:
            return torch.nn.utils.clip_grad_norm_(self.params, self.engine.clip_norm)
        return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])

    def _flag(self, mean: Tensor, over: Tensor, grad_bad: Tensor) -> Tensor:
        """Update the sticky flags with this step's; 1.0 (skip the step) once any is set, else 0.0 (on the device)."""
        now = torch.stack([~torch.isfinite(mean), over, grad_bad.to(over.device)]).to(mean.dtype)
        if self.flags is None:
            self.flags, self.fault = torch.zeros_like(now), torch.zeros_like(mean)
        self.fault = torch.where((self.flags.amax() == 0) & (now.amax() > 0), mean, self.fault)
        self.flags = torch.maximum(self.flags, now)
        return self.flags.amax().float()

    def check(self, epoch: int) -> None:
        """Deferred mode: raise :class:`Diverged` for a flagged step (one read of the device); eager: nothing."""
        if self.flags is None or not bool(self.flags.amax() > 0):
            return
        nonfinite, over, grad = self.flags.tolist()
        if nonfinite or over:
            self.engine._check_step(self.fault.item(), self.start, epoch)
        self.engine._stop(f"a gradient became NaN or infinite in epoch {epoch + 1} (the step was not applied)")

    def mean(self) -> float:
        """The epoch's running mean loss so far (reads the device in deferred mode)."""
        return float(self.total) / self.seen
