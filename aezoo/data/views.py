"""Multi-view MNIST: three modalities of one digit class, built offline from the verified MNIST file.

Each datum has

- ``x`` ``(784,)``: an MNIST image (binarized as asked);
- ``x2`` ``(784,)``: a *different* image of the same class, drawn at random (seeded) from the same
  split and shown inverted (``1 - grey``: a white background, dark strokes), binarized once with a
  fixed seed unless ``binarization="none"`` (only ``x`` is resampled under ``dynamic``);
- ``y`` ``(,)`` int64: the class, a categorical modality.

The two images share the class and nothing else (writer, slant and thickness are drawn apart), so
each image modality carries much *modality-specific* variation, and the label modality is
surjective: one label stands for thousands of images. These are the two settings of the critiques
of mixture-based multimodal VAEs ("On the Limitations of Multimodal VAEs", Daunhawer et al.,
arXiv:2110.04121; "Mixture-of-experts VAEs can disregard variation in surjective multimodal data",
Wolff et al. 2022). It stands in for PolyMNIST (Sutter et al. 2021), which cannot be downloaded
here: PolyMNIST has five image modalities on textured backgrounds and no label modality.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes, _static_binarize, binarize_splits
from aezoo.data.images import mnist_arrays

VIEW_SEED = STATIC_SEED + 7  # partners and x2's binarization


def partners(labels: np.ndarray, seed: int) -> np.ndarray:
    """For each datum ``i``, the index of another datum of the same class (uniform, seeded): ``(N,)`` int64.

    A class with a single member pairs it with itself.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) == 1:
            out[members] = members
            continue
        shift = rng.integers(1, len(members), size=len(members))  # never 0: never the image itself
        out[members] = members[(np.arange(len(members)) + shift) % len(members)]
    return out


def second_view(grey: Tensor, labels: np.ndarray, seed: int) -> Tensor:
    """The ``x2`` modality ``(N, 784)`` grey levels: the inverted image of each datum's partner."""
    return 1.0 - grey[torch.as_tensor(partners(labels, seed))]


def as_digits(modality: str, images: Tensor) -> Tensor:
    """Images of ``modality`` (``"x"`` or ``"x2"``) in MNIST's convention (dark background), e.g. for a
    digit classifier: ``x`` as it is, ``x2`` inverted back."""
    if modality not in ("x", "x2"):
        raise ValueError(f"mnist_views has the image modalities 'x' and 'x2', not {modality!r}")
    return images if modality == "x" else 1.0 - images


def mnist_views(binarization: str = "dynamic", train_size: int | None = None,
                test_size: int | None = None) -> Dataset:
    """Multi-view MNIST (see the module docstring): 60,000 train, 10,000 test; covariates ``x2`` and ``y``."""
    xtr, ytr, xte, yte = mnist_arrays()
    n_train, n_test = _split_sizes(train_size, test_size, len(xtr), len(xte))
    grey = {"train": torch.as_tensor(xtr[:n_train]), "test": torch.as_tensor(xte[:n_test])}
    labels = {"train": ytr[:n_train], "test": yte[:n_test]}
    train, test = binarize_splits(grey["train"], grey["test"], binarization)
    views = {}
    for i, split in enumerate(("train", "test")):  # seeds of their own: x2's noise is independent of x's
        view = second_view(grey[split], labels[split], VIEW_SEED + i)
        views[split] = view if binarization == "none" else _static_binarize(view, VIEW_SEED + 2 + i)
    return Dataset("mnist_views", train, test, binarization, (28, 28),
                   {"x2": views["train"], "y": torch.as_tensor(labels["train"]).long()},
                   {"x2": views["test"], "y": torch.as_tensor(labels["test"]).long()}, num_classes=10)


SOURCES = {
    "mnist_views": Source(mnist_views, "multi-view MNIST: an image x, an inverted other image x2 of the same class "
                          "and the label y (60,000 train, 10,000 test)", ("x2", "y")),
}
