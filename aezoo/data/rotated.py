"""Rotated MNIST: real MNIST digits of a few classes, each rotated by its own angle, the angle as covariate.

Each image is turned by an angle drawn uniformly from [0, 2 pi) (seeded) with bilinear
interpolation (``torch.nn.functional.grid_sample``), as the rotated-digit data of "Gaussian
Process Prior Variational Autoencoders" (Casale et al., arXiv:1810.11738) and "Scalable Gaussian
Process Variational Autoencoders" (Jazbec et al., arXiv:2010.13472), here with one random angle per
image. The angle is the covariate ``c`` ``(N,)`` in radians (a GP prior over it: ``gppvae``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes, binarize_splits
from aezoo.data.images import mnist_arrays

DIGITS = (3,)  # the classes kept by default, as in [Casale et al.]


def rotate(images: Tensor, angles: Tensor, shape: tuple[int, int] = (28, 28)) -> Tensor:
    """Rotate flat images ``(N, H W)`` counter-clockwise by ``angles`` ``(N,)`` radians about their centre.

    Returns:
        ``(N, H W)``, values clamped to [0, 1]; pixels rotated in from outside the frame are 0.
    """
    cos, sin = angles.cos(), angles.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], -2)  # (N, 2, 3)
    img = images.reshape(len(images), 1, *shape)
    grid = F.affine_grid(theta.to(img.dtype), list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, align_corners=False).reshape(len(images), -1).clamp(0, 1)


def rotated_split(x: np.ndarray, y: np.ndarray, digits: tuple[int, ...], size: int | None, seed: int):
    """``(images (n, 784), angles (n,), labels (n,))``: the first ``size`` images of ``digits``, rotated."""
    keep = np.isin(y, digits)
    x, y = torch.as_tensor(x[keep][:size]), torch.as_tensor(y[keep][:size]).long()
    angles = 2 * math.pi * torch.rand(len(x), generator=torch.Generator().manual_seed(seed))
    return rotate(x, angles), angles, y


def load_rotated_mnist(binarization: str = "dynamic", train_size: int | None = None, test_size: int | None = None,
                       digits: tuple[int, ...] = DIGITS) -> Dataset:
    """The ``rotated_mnist`` data set: train from MNIST train + validation, test from MNIST test.

    Args:
        binarization: as for ``mnist`` (applied after rotating).
        train_size, test_size: keep the first N rotated images of each split.
        digits: the classes kept.

    Returns:
        A :class:`Dataset` whose covariates are the angles ``c`` ``(N,)`` in radians and the labels ``y``.
    """
    xtr, ytr, xte, yte = mnist_arrays()
    n_train, n_test = _split_sizes(train_size, test_size, int(np.isin(ytr, digits).sum()),
                                   int(np.isin(yte, digits).sum()))
    train, angles, labels = rotated_split(xtr, ytr, digits, n_train, STATIC_SEED)
    test, angles_test, labels_test = rotated_split(xte, yte, digits, n_test, STATIC_SEED + 1)
    train, test = binarize_splits(train, test, binarization)
    return Dataset("rotated_mnist", train, test, binarization, (28, 28),
                   train_covariates={"c": angles, "y": labels}, test_covariates={"c": angles_test, "y": labels_test},
                   num_classes=10)


SOURCES = {"rotated_mnist": Source(load_rotated_mnist, "MNIST 3s, each rotated by a random angle c in [0, 2pi), "
                                   "labels y: 6,131 train, 1,010 test", ("c", "y"))}
