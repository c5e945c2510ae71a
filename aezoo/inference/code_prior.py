"""The second stage of VQ-VAE: fit an autoregressive prior over the frozen encoder's code grids.

"Neural Discrete Representation Learning" (van den Oord, Vinyals & Kavukcuoglu, arXiv:1711.00937)
trains the autoencoder with a uniform prior over codes, then fits a PixelCNN to the codes of the
training data: maximum likelihood of ``k(x_n)`` ``(H, W)`` under
:class:`aezoo.guides.codebook.GridPrior`, Adam over minibatches of grids. The encoder, codebook and
decoder are left as they are; afterwards the model's ELBO (and ``vq_vae.bound``) uses the fitted prior.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import Tensor

from aezoo.checks import integer, positive
from aezoo.core import Autoencoder, FitResult
from aezoo.guides.codebook import GridPrior


def encode_codes(ae: Autoencoder, x: Tensor, batch_size: int = 500) -> Tensor:
    """The code grids ``(N, H, W)`` int64 of images ``x`` ``(N, D_x)`` (evaluation mode, no gradients)."""
    was = ae.training
    ae.eval()
    try:
        return torch.cat([ae.guide.codes(chunk) for chunk in x.split(batch_size)])
    finally:
        ae.train(was)


def fit_prior(ae: Autoencoder, x: Tensor, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
              transform: Callable[[Tensor], Tensor] | None = None) -> FitResult:
    """Fit ``ae.model.prior`` (a :class:`GridPrior`) to the code grids of ``x`` and mark it fitted.

    Args:
        ae: an autoencoder whose model has a ``GridPrior`` ``prior`` and whose guide has ``codes(x)`` (``vq_vae``).
        x: training images ``(N, D_x)`` on ``ae``'s device.
        epochs, batch_size, lr: Adam over shuffled minibatches of grids.
        seed: seeds the minibatch order and the draws of ``transform``.
        transform: applied to ``x`` before encoding, afresh each epoch (e.g. dynamic binarization).

    Returns:
        ``FitResult`` with ``losses`` ``(E,)``: the mean ``-log p(k)`` per grid over each epoch, nats;
        ``stats["train_seconds"]``.

    Raises:
        ValueError: a model without a code-grid prior, or bad sizes.
    """
    prior = getattr(ae.model, "prior", None)
    if not isinstance(prior, GridPrior) or not hasattr(ae.guide, "codes"):
        raise ValueError(f"fit_prior does not apply to {ae.name}: it needs a model with a GridPrior 'prior' over "
                         "code grids and a guide with codes(x) (vq_vae)")
    integer("epochs", epochs)
    integer("batch_size", batch_size)
    positive("lr", lr)
    gen = torch.Generator().manual_seed(seed)
    params = list(prior.net.parameters())
    optim = torch.optim.Adam(params, lr=lr)
    prior.fitted.fill_(True)
    losses, start = [], time.perf_counter()
    prior.net.requires_grad_(True)
    try:
        codes = None
        for _ in range(epochs):
            if codes is None or transform is not None:
                with torch.random.fork_rng():
                    torch.manual_seed(int(torch.randint(2**31, (), generator=gen)))
                    codes = encode_codes(ae, x if transform is None else transform(x))
            total = 0.0
            for idx in torch.randperm(len(codes), generator=gen).to(codes.device).split(batch_size):
                loss = -prior.log_prob(codes[idx]).mean()
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += loss.item() * len(idx)
            losses.append(total / len(codes))
    finally:
        prior.net.requires_grad_(False)
    stats = {"train_seconds": torch.tensor(time.perf_counter() - start)}
    return FitResult(losses=torch.tensor(losses, dtype=torch.float64), stats=stats)


__all__ = ["encode_codes", "fit_prior"]
