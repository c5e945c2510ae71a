"""The one optimisation loop shared by the gradient engines (``svi``, ``iwae``, ...).

An engine subclasses :class:`GradientEngine` and states only its objective in ``loss``; the
loop does minibatching with ``num_data`` scaling, Adam, seeding, a tqdm progress bar, NaN
checks and per-epoch checkpoints from which an interrupted fit resumes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from aezoo.core import Autoencoder, FitResult, atomic_torch_save, check_lengths, load_checkpoint, rows, to_device
from aezoo.inference.objectives import at_epoch


@dataclass(frozen=True)
class GradientEngine:
    """Fields shared by optimisation engines.

    Attributes:
        epochs: passes over the training data.
        batch_size: minibatch size ``B``.
        lr: Adam learning rate.
        seed: seeds Pyro/torch and the minibatch order.
        progress: show a tqdm progress bar with the running loss.
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    progress: bool = True

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        """Negative objective per datum (nats), averaged over the minibatch; differentiable."""
        raise NotImplementedError

    def check(self, ae: Autoencoder, *data: Tensor) -> None:
        """Raise ``ValueError`` when the engine does not apply to ``ae`` (e.g. needs reparameterised guides)."""

    def fit(
        self,
        ae: Autoencoder,
        *data: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        checkpoint: str | Path | None = None,
    ) -> FitResult:
        """Train ``ae`` in place.

        Args:
            ae: the autoencoder; its device decides where the work runs.
            data: ``x`` ``(N, D_x)`` then the model's covariates ``(N, ...)`` in ``ae.covariates``
                order; ``None`` for a covariate the data lack (the model samples it or says why not).
            transform: applied to each ``x`` minibatch before use (e.g. dynamic binarization).
            checkpoint: file written after every epoch (model, optimiser, RNG states, losses); if it
                exists, the fit resumes after its last epoch.

        Returns:
            ``FitResult`` with ``losses`` ``(E,)`` in nats per datum and ``stats["train_seconds"]``.

        Raises:
            ValueError: data that do not fit the model, or covariates of another length than ``x``.
            FloatingPointError: the loss became NaN or infinite (lower ``lr``).
        """
        num_data = check_lengths(data)
        device = next(ae.parameters()).device
        data = to_device(data, device)
        ae.validate(*_transformed(data, transform))
        first = _transformed(rows(data, slice(0, self.batch_size)), transform)
        self.check(ae, *first)

        pyro.set_rng_seed(self.seed)
        order = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            self.loss(ae, *first, num_data=num_data)  # warm-up: lazily created parameters exist after it
        optim = torch.optim.Adam(ae.parameters(), lr=self.lr)
        losses, seconds = self._resume(ae, optim, order, checkpoint, device)

        steps = math.ceil(num_data / self.batch_size)
        bar = tqdm(total=self.epochs * steps, initial=len(losses) * steps, disable=not self.progress,
                   desc=f"{type(self).__name__.lower()} {ae.name}", unit="step", dynamic_ncols=True)
        ae.train()
        # Pyro checked shapes and supports in the warm-up step above; skipping those checks in every
        # step saves ~10% of a small VAE epoch (benchmarks/svi_overhead.py). NaNs are still caught.
        with pyro.validation_enabled(False):
            for epoch in range(len(losses), self.epochs):
                start, total, seen = time.perf_counter(), 0.0, 0
                batches = torch.randperm(num_data, generator=order).to(device).split(self.batch_size)
                for step, idx in enumerate(batches):
                    with at_epoch(epoch + step / steps):  # training progress, read by schedules (objectives.py)
                        loss = self.loss(ae, *_transformed(rows(data, idx), transform), num_data=num_data)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"{type(self).__name__} loss became {loss.item()} in epoch {epoch + 1}; lower the "
                            f"learning rate (lr={self.lr}) or check the data; the last good epoch is in the checkpoint"
                        )
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    optim.step()
                    total, seen = total + loss.item() * len(idx), seen + len(idx)
                    bar.update()
                    bar.set_postfix(epoch=epoch + 1, loss=f"{total / seen:.3f}")  # running mean of the epoch
                seconds += time.perf_counter() - start
                losses.append(total / num_data)
                if checkpoint is not None:
                    _save(checkpoint, ae, optim, order, losses, seconds, device)
        bar.close()
        ae.eval()
        return FitResult(losses=torch.tensor(losses, dtype=torch.float64),
                         stats={"train_seconds": torch.tensor(seconds)})

    def _resume(self, ae: Autoencoder, optim: torch.optim.Optimizer, order: torch.Generator,
                checkpoint: str | Path | None, device: torch.device) -> tuple[list[float], float]:
        """Restore model, optimiser and RNG states from ``checkpoint`` if it exists; epoch losses and seconds."""
        if checkpoint is None or not Path(checkpoint).exists():
            return [], 0.0
        state = load_checkpoint(checkpoint)
        if len(state["losses"]) > self.epochs:
            raise ValueError(f"checkpoint {checkpoint} already holds {len(state['losses'])} epochs, more than "
                             f"epochs={self.epochs}")
        ae.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        order.set_state(state["order_rng"])
        return state["losses"].tolist(), float(state["train_seconds"])


def _save(path: str | Path, ae: Autoencoder, optim: torch.optim.Optimizer, order: torch.Generator,
          losses: list[float], seconds: float, device: torch.device) -> None:
    rng = {"torch_rng": torch.get_rng_state(), "order_rng": order.get_state()}
    if device.type == "cuda":
        rng["cuda_rng"] = torch.cuda.get_rng_state(device)
    atomic_torch_save({"model": ae.state_dict(), "optim": optim.state_dict(), "train_seconds": seconds,
                       "losses": torch.tensor(losses, dtype=torch.float64), **rng}, path)


def _transformed(batch: tuple[Tensor, ...], transform: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, ...]:
    return batch if transform is None else (transform(batch[0]), *batch[1:])
