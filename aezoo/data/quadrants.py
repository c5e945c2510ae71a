"""MNIST quadrant prediction: see one, two or three quadrants of a digit, predict the rest.

The structured-output task of "Learning Structured Output Representation using Deep Conditional
Generative Models" (Sohn, Lee & Yan, NeurIPS 2015), with the quadrants of Pyro's CVAE example
(``examples/cvae``): with 1 quadrant the bottom-left one is seen, with 2 the left half, with 3
all but the bottom-right one. Each datum provides

- ``x`` ``(784,)``: the whole image (binarized as asked);
- ``c`` ``(784,)``: the condition, the grey levels of the seen quadrants and -1 elsewhere;
- ``mask`` ``(784,)`` bool: True on the quadrants to predict, the only pixels of ``x`` that count;
- ``y``: the digit's label.

So log p(x | c) of a conditional model with this mask is the conditional log-likelihood of the
unseen quadrants, the figure Pyro's example reports (there with grey-level targets).
"""

from __future__ import annotations

import torch
from torch import Tensor

from aezoo.data.base import Dataset, Source, _split_sizes, binarize_splits
from aezoo.data.images import mnist_arrays

SIDE = 28


def quadrant_mask(num_seen: int, side: int = SIDE) -> Tensor:
    """``(side * side,)`` bool, True on the pixels to predict when ``num_seen`` quadrants (1, 2, 3) are seen."""
    if num_seen not in (1, 2, 3):
        raise ValueError(f"the number of seen quadrants must be 1, 2 or 3, got {num_seen}")
    seen = torch.zeros(side, side, dtype=torch.bool)
    h = side // 2
    seen[h:, :h] = True  # bottom-left
    if num_seen >= 2:
        seen[:, :h] = True  # left half
    if num_seen == 3:
        seen[:h, :] = True  # and top-right
    return ~seen.reshape(-1)


def quadrants(num_seen: int, binarization: str = "dynamic", train_size: int | None = None,
              test_size: int | None = None) -> Dataset:
    """The quadrant task on real MNIST (60,000 train, 10,000 test) with ``num_seen`` quadrants seen."""
    xtr, ytr, xte, yte = mnist_arrays()
    n_train, n_test = _split_sizes(train_size, test_size, len(xtr), len(xte))
    grey_train, grey_test = torch.as_tensor(xtr[:n_train]), torch.as_tensor(xte[:n_test])
    train, test = binarize_splits(grey_train, grey_test, binarization)
    predict = quadrant_mask(num_seen)

    def covariates(grey: Tensor, y) -> dict[str, Tensor]:
        return {"c": grey.masked_fill(predict, -1.0), "mask": predict.expand(len(grey), -1).clone(),
                "y": torch.as_tensor(y).long()}

    return Dataset(f"mnist_q{num_seen}", train, test, binarization, (SIDE, SIDE),
                   covariates(grey_train, ytr[:n_train]), covariates(grey_test, yte[:n_test]), num_classes=10)


def _source(num_seen: int) -> Source:
    def load(binarization: str = "dynamic", train_size: int | None = None, test_size: int | None = None) -> Dataset:
        return quadrants(num_seen, binarization, train_size, test_size)

    seen = {1: "the bottom-left quadrant", 2: "the left half", 3: "three quadrants"}[num_seen]
    return Source(load, f"MNIST quadrant prediction: condition c = {seen}, predict the rest (mask), labels y",
                  ("c", "mask", "y"))


SOURCES = {f"mnist_q{k}": _source(k) for k in (1, 2, 3)}
