"""Datasets: real MNIST (verified file), scikit-learn digits, each model's synthetic data, sequences.

:func:`load` serves every key of :data:`DATASETS`. Images, the :class:`Dataset` record, the
verified MNIST file and binarization live in :mod:`aezoo.data.base`; the sequence data sets
(``lds_video``, ``healing_mnist``, ``chorales``: ``x`` ``(N, T, D_x)`` with a ``mask`` covariate)
in :mod:`aezoo.data.sequences`. The names of both are importable from here.
"""

from __future__ import annotations

import numpy as np
import torch

from aezoo.data.base import (
    BINARIZATIONS,
    MNIST_INSTALL,
    MNIST_SHA256,
    STATIC_SEED,
    Dataset,
    _split_sizes,
    _static_binarize,
    dynamic_binarize,
    mnist_path,
    read_mnist,
)
from aezoo.data.rotated import load_rotated_mnist
from aezoo.data.sequences import (
    Sequences,
    _load_chorales,
    _load_sequences,
    cache_dir,
    chorale_rolls,
    chorales,
    healing_mnist,
    lds_video,
    piano_roll,
)

DATASETS = {
    "mnist": "real MNIST digits 28x28: 60,000 train (train + validation), 10,000 test",
    "digits": "scikit-learn's 8x8 handwritten digits: 1,497 train, 300 test",
    "synthetic": "draws from the model's own example_data (1,000 train, 200 test by default)",
    "lds_video": "linear dynamical system video, 4x4 pixels, T=20, known A and C: 1,000 train, 200 test",
    "healing_mnist": "rotating MNIST digits, T=10, noise, 60% pixels missing: 10,000 train, 2,000 test by default",
    "chorales": "Bach chorales (music21), 88-key piano rolls per quarter note, in C, T<=193: 297 train, 74 test",
    "rotated_mnist": "MNIST 3s, each rotated by a random angle in [0, 2pi) (the covariate): 6,131 train, 1,010 test",
}
SEQUENCE_DATASETS = ("lds_video", "healing_mnist", "chorales")



def load(
    name: str,
    binarization: str = "dynamic",
    train_size: int | None = None,
    test_size: int | None = None,
    model: str | None = None,
    model_config=None,
) -> Dataset:
    """Load a dataset by name.

    Args:
        name: a key of :data:`DATASETS`.
        binarization: one of :data:`BINARIZATIONS`; ignored by ``synthetic`` (its data are as the
            model draws them) and by the sequence data sets (grey levels with a mask covariate).
        train_size, test_size: keep the first N of each split (quick runs).
        model, model_config: the model (registry key) and its config, for ``synthetic``.

    Raises:
        ValueError: unknown name or binarization, bad sizes, or ``synthetic`` without a model.
        FileNotFoundError: MNIST is not installed.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; choose one of {BINARIZATIONS}")
    if name == "synthetic":
        from aezoo.models import MODELS

        if model is None:
            raise ValueError("the synthetic dataset needs a model: it draws the model's example_data")
        n_train, n_test = _split_sizes(train_size or 1000, test_size or 200, None, None)
        module = MODELS[model]
        cfg = model_config or module.Config()
        (x,) = module.example_data(cfg, n_train + n_test, seed=STATIC_SEED)[:1]
        return Dataset(name, x[:n_train].float(), x[n_train:].float(), binarization="none")
    if name == "chorales":
        return _load_chorales(train_size, test_size)
    if name == "rotated_mnist":
        return load_rotated_mnist(binarization, train_size, test_size)
    if name in SEQUENCE_DATASETS:
        return _load_sequences(name, train_size, test_size)
    if name == "mnist":
        (xtr, ytr), (xva, yva), (xte, yte) = read_mnist()
        xtr, ytr = np.concatenate([xtr, xva]), np.concatenate([ytr, yva])
        shape = (28, 28)
    elif name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = digits.data.astype(np.float32) / 16.0, digits.target
        xtr, ytr, xte, yte = x[:1497], y[:1497], x[1497:], y[1497:]
        shape = (8, 8)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    n_train, n_test = _split_sizes(train_size, test_size, len(xtr), len(xte))
    train, test = torch.as_tensor(xtr[:n_train]), torch.as_tensor(xte[:n_test])
    if binarization == "static":
        train = _static_binarize(train, STATIC_SEED)
    if binarization != "none":
        test = _static_binarize(test, STATIC_SEED + 1)
    return Dataset(name, train, test, torch.as_tensor(ytr[:n_train]).long(), torch.as_tensor(yte[:n_test]).long(),
                   binarization, shape)


__all__ = [
    "BINARIZATIONS", "DATASETS", "MNIST_INSTALL", "MNIST_SHA256", "SEQUENCE_DATASETS", "STATIC_SEED", "Dataset",
    "Sequences", "cache_dir", "chorale_rolls", "chorales", "dynamic_binarize", "healing_mnist", "lds_video", "load",
    "mnist_path", "piano_roll", "read_mnist",
]
