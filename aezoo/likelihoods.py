"""Observation likelihoods p(x | decoder output) and the checks that guard them.

The zoo's image models share three likelihoods for ``x`` of shape ``(..., B, D_x)``:

- ``bernoulli``: binary pixels, ``logits`` from the decoder.
- ``continuous_bernoulli``: pixels in [0, 1] ("The continuous Bernoulli: fixing a pervasive
  error in variational autoencoders", Loaiza-Ganem & Cunningham, arXiv:1907.06845).
- ``gaussian``: real values, decoder mean and a learned per-dimension scale.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import Tensor

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


def x_dist(likelihood: str, out: Tensor, scale: Tensor | None = None) -> dist.Distribution:
    """The distribution of ``x`` given the decoder output.

    Args:
        likelihood: one of :data:`LIKELIHOODS`.
        out: decoder output ``(..., B, D_x)``: logits (Bernoulli kinds) or mean (Gaussian).
        scale: ``(D_x,)`` standard deviation, used by ``gaussian`` only.

    Returns:
        A distribution with event shape ``(D_x,)``.
    """
    if likelihood == "bernoulli":
        return dist.Bernoulli(logits=out).to_event(1)
    if likelihood == "continuous_bernoulli":
        return dist.ContinuousBernoulli(logits=out).to_event(1)
    if likelihood == "gaussian":
        return dist.Normal(out, scale).to_event(1)
    raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")


def check_x(x: Tensor, x_dim: int, likelihood: str) -> None:
    """Raise a clear error when ``x`` cannot be data for this likelihood.

    Args:
        x: data ``(B, D_x)``.
        x_dim: the model's ``D_x``.
        likelihood: one of :data:`LIKELIHOODS`.

    Raises:
        ValueError: wrong shape, NaN/inf values, non-binary data under ``bernoulli`` or values
            outside [0, 1] under ``continuous_bernoulli``.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if x.dim() != 2 or x.shape[-1] != x_dim:
        raise ValueError(
            f"expected data of shape (B, {x_dim}), got {tuple(x.shape)}; flatten images to vectors "
            f"or set model.x_dim={x.shape[-1] if x.dim() else '?'}"
        )
    if not torch.isfinite(x).all():
        raise ValueError("data contain NaN or infinite values; clean or impute them before fitting")
    if likelihood == "bernoulli" and not ((x == 0) | (x == 1)).all():
        raise ValueError(
            "the Bernoulli likelihood needs binary data (0/1), but the data have other values; "
            "binarize them (--binarize dynamic or static) or choose "
            "model.likelihood=continuous_bernoulli or gaussian"
        )
    if likelihood == "continuous_bernoulli" and ((x < 0) | (x > 1)).any():
        raise ValueError("the continuous Bernoulli likelihood needs data in [0, 1]; rescale the data")
