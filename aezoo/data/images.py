"""Image data sets with labels: real MNIST (the verified file) and scikit-learn's 8x8 digits.

Both provide ``x`` ``(N, H W)`` grey levels in [0, 1] and the label covariate ``y`` ``(N,)`` int64
in ``[0, 10)``. MNIST is train + validation (60,000) and test (10,000), as in "Importance Weighted
Autoencoders" (Burda et al., arXiv:1509.00519); digits is the first 1,497 / last 300 of 1,797.
"""

from __future__ import annotations

import numpy as np
import torch

from aezoo.data.base import Dataset, Source, _split_sizes, binarize_splits, read_mnist


def mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train (60000, 784), y_train, x_test (10000, 784), y_test)`` from the verified MNIST file."""
    (xtr, ytr), (xva, yva), (xte, yte) = read_mnist()
    return np.concatenate([xtr, xva]), np.concatenate([ytr, yva]), xte, yte


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train (1497, 64), y_train, x_test (300, 64), y_test)``: scikit-learn's digits scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(np.float32) / 16.0, digits.target
    return x[:1497], y[:1497], x[1497:], y[1497:]


def labelled_images(name: str, arrays, shape: tuple[int, int], binarization: str, train_size: int | None,
                    test_size: int | None) -> Dataset:
    """A :class:`Dataset` of flat images and their labels ``y`` from ``arrays()``, binarized as asked."""
    xtr, ytr, xte, yte = arrays()
    n_train, n_test = _split_sizes(train_size, test_size, len(xtr), len(xte))
    train, test = binarize_splits(torch.as_tensor(xtr[:n_train]), torch.as_tensor(xte[:n_test]), binarization)
    return Dataset(name, train, test, binarization, shape,
                   train_covariates={"y": torch.as_tensor(ytr[:n_train]).long()},
                   test_covariates={"y": torch.as_tensor(yte[:n_test]).long()}, num_classes=10)


def mnist(binarization: str = "dynamic", train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """Real MNIST digits 28x28 with labels (see the module docstring)."""
    return labelled_images("mnist", mnist_arrays, (28, 28), binarization, train_size, test_size)


def digits(binarization: str = "dynamic", train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """scikit-learn's 8x8 digits with labels (see the module docstring)."""
    return labelled_images("digits", digits_arrays, (8, 8), binarization, train_size, test_size)


SOURCES = {
    "mnist": Source(mnist, "real MNIST digits 28x28 with labels y: 60,000 train (train + validation), 10,000 test",
                    ("y",)),
    "digits": Source(digits, "scikit-learn's 8x8 handwritten digits with labels y: 1,497 train, 300 test", ("y",)),
}
