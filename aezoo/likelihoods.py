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


def x_dist(likelihood: str, out: Tensor, scale: Tensor | None = None, mask: Tensor | None = None,
           event_dims: int = 1) -> dist.Distribution:
    """The distribution of ``x`` given the decoder output.

    Args:
        likelihood: one of :data:`LIKELIHOODS`.
        out: decoder output ``(..., B, D_x)`` (or ``(..., B, T, D_x)``): logits (Bernoulli kinds)
            or mean (Gaussian).
        scale: ``(D_x,)`` standard deviation, used by ``gaussian`` only.
        mask: bool, ``x``'s shape, True where an entry counts; elsewhere its log density is 0. None: all count.
        event_dims: the trailing dims of ``out`` that form one datum (1 for vectors, 2 for sequences).

    Returns:
        A distribution with event shape ``out.shape[-event_dims:]``.
    """
    if likelihood == "bernoulli":
        base = dist.Bernoulli(logits=out)
    elif likelihood == "continuous_bernoulli":
        base = dist.ContinuousBernoulli(logits=out)
    elif likelihood == "gaussian":
        base = dist.Normal(out, scale)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    return (base if mask is None else base.mask(mask)).to_event(event_dims)


def check_labels(y: Tensor, num_classes: int, model: str, unlabelled: bool = False) -> None:
    """``ValueError`` unless ``y`` is ``(B,)`` integer labels in ``[0, num_classes)`` (or -1 when ``unlabelled``)."""
    low = -1 if unlabelled else 0
    if y.dim() != 1 or y.is_floating_point() or ((y < low) | (y >= num_classes)).any():
        extra = ", or -1 for unlabelled data" if unlabelled else ""
        raise ValueError(f"{model} labels 'y' must be integers in [0, {num_classes}) of shape (B,){extra}; got "
                         f"{y.dtype} {tuple(y.shape)}; renumber the classes or set model.num_classes")


def check_mask(mask: Tensor | None, x: Tensor) -> None:
    """``ValueError`` unless ``mask`` is None or bool of ``x``'s shape."""
    if mask is not None and (mask.shape != x.shape or mask.dtype != torch.bool):
        raise ValueError(f"the mask must be bool of the data's shape {tuple(x.shape)}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")


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
