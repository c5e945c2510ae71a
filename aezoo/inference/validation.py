"""The validation curve of a gradient fit: the engine's own bound on held-out data after every epoch,
the best epoch so far, and early stopping.

The held-out data are transformed once (a dynamic binarization becomes one fixed draw, seeded) and
scored with the engine's ``loss`` (nats per datum: -ELBO for ``svi``, -IWAE_K for ``iwae``, ...) in
``eval`` mode without gradients, under a forked random stream, so validating changes no training
result. Early stopping with ``patience`` P stops the fit once P epochs in a row have not improved on
the best validation loss (Prechelt, "Early Stopping - But When?", 1998); the best epoch's parameters
are kept in a checkpoint of their own.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from aezoo.core import Autoencoder, check_lengths, rows
from aezoo.progress import at_epoch


class Validation:
    """Held-out data and the curve on them.

    Args:
        data: ``(x, *covariates)`` on the model's device, already prepared.
        transform: applied once to ``x`` under ``seed``.
    """

    def __init__(self, data: tuple, transform: Callable[[Tensor], Tensor] | None, seed: int) -> None:
        self.num_data = check_lengths(data)
        if transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                data = (transform(data[0]), *data[1:])
        self.data = data
        self.losses: list[float] = []
        self.best_epoch: int | None = None

    @property
    def best(self) -> float:
        return self.losses[self.best_epoch] if self.best_epoch is not None else math.inf

    def score(self, loss: Callable[..., Tensor], ae: Autoencoder, epoch: int, batch_size: int,
              device: torch.device) -> bool:
        """Append epoch ``epoch``'s validation loss; True when it is the best so far."""
        was_training = ae.training
        ae.eval()
        total = 0.0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), \
                at_epoch(epoch + 1):
            for start in range(0, self.num_data, batch_size):
                batch = rows(self.data, slice(start, start + batch_size))
                total += loss(ae, *batch, num_data=self.num_data).item() * len(batch[0])
        ae.train(was_training)
        self.losses.append(total / self.num_data)
        if self.losses[-1] < self.best:
            self.best_epoch = len(self.losses) - 1
            return True
        return False

    def exhausted(self, patience: int) -> bool:
        """True when the last ``patience`` epochs (> 0) did not improve on the best."""
        return bool(patience) and self.best_epoch is not None and len(self.losses) - 1 - self.best_epoch >= patience

    def state(self) -> dict[str, Any]:
        return {"val_losses": torch.tensor(self.losses, dtype=torch.float64), "best_epoch": self.best_epoch}

    def restore(self, state: dict[str, Any]) -> None:
        self.losses = state.get("val_losses", torch.zeros(0)).tolist()
        self.best_epoch = state.get("best_epoch")
