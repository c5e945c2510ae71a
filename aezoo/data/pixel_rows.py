"""Images read as sequences of pixel rows: ``mnist_rows``, real MNIST with ``T = 28`` rows of ``D_x = 28`` pixels.

``x`` is ``(N, 28, 28)``: sequence ``n``, time step ``t`` (row ``t``, top to bottom), ``D_x`` the 28
pixels of that row; labels ``y`` ``(N,)`` int64 in ``[0, 10)``. The splits and binarization are those
of ``mnist`` (:mod:`aezoo.data.images`): 60,000 train (train + validation) and 10,000 test, as in the
sequential-MNIST experiments of "Parallelizing Autoregressive Generation with Variational State
Space Models" (Lambrechts, Claes, Geurts & Ernst, arXiv:2407.08415). No ``mask``: every entry is observed.
"""

from __future__ import annotations

import torch

from aezoo.data.base import Dataset, Source, _split_sizes, binarize_splits
from aezoo.data.images import mnist_arrays


def mnist_rows(binarization: str = "dynamic", train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """Real MNIST as row sequences ``(N, 28, 28)`` with labels ``y`` (see the module docstring).

    Raises:
        FileNotFoundError: MNIST is not installed (the message says how to install it).
        ValueError: bad sizes or binarization.
    """
    xtr, ytr, xte, yte = mnist_arrays()
    n_train, n_test = _split_sizes(train_size, test_size, len(xtr), len(xte))
    train, test = binarize_splits(torch.as_tensor(xtr[:n_train]), torch.as_tensor(xte[:n_test]), binarization)
    return Dataset("mnist_rows", train.reshape(-1, 28, 28), test.reshape(-1, 28, 28), binarization, None,
                   train_covariates={"y": torch.as_tensor(ytr[:n_train]).long()},
                   test_covariates={"y": torch.as_tensor(yte[:n_test]).long()}, num_classes=10)


SOURCES = {
    "mnist_rows": Source(mnist_rows, "real MNIST as sequences of T=28 pixel rows (D_x=28), labels y: 60,000 train, "
                         "10,000 test", ("y",), "sequences"),
}
