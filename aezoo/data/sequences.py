"""Sequence data sets: ``x`` ``(N, T, D_x)`` with a covariate ``mask`` ``(N, T, D_x)`` bool.

The mask is True where observed; missing entries of ``x`` are filled with 0.


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

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes, read_mnist


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


def _sequence_dataset(name: str, train: Sequences, test: Sequences, shape: tuple[int, int] | None = None) -> Dataset:
    """A :class:`Dataset` of grey-level sequences with their ``mask`` (and labels ``y`` where known)."""
    covariates = [("mask", train.mask, test.mask)] + ([("y", train.labels, test.labels)] if train.labels is not None
                                                      else [])
    return Dataset(name, train.x, test.x, "none", shape, {k: tr for k, tr, _ in covariates},
                   {k: te for k, _, te in covariates}, num_classes=10 if train.labels is not None else None,
                   test_truth=test.truth)


def load_lds_video(binarization: str = "none", train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """The ``lds_video`` data set: 1,000 train and 200 test sequences by default (binarization ignored)."""
    n_train, n_test = _split_sizes(train_size or 1000, test_size or 200, None, None)
    seqs = lds_video(n_train + n_test, seed=STATIC_SEED)
    return _sequence_dataset("lds_video", Sequences(seqs.x[:n_train], seqs.mask[:n_train]),
                             Sequences(seqs.x[n_train:], seqs.mask[n_train:], seqs.truth[n_train:]))


def load_healing_mnist(binarization: str = "none", train_size: int | None = None,
                       test_size: int | None = None) -> Dataset:
    """The ``healing_mnist`` data set: 10,000 train and 2,000 test sequences by default (binarization ignored)."""
    n_train, n_test = _split_sizes(train_size or 10000, test_size or 2000, 60000, 10000)
    return _sequence_dataset("healing_mnist", healing_mnist("train", n_train), healing_mnist("test", n_test),
                             (28, 28))


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


def load_chorales(binarization: str = "none", train_size: int | None = None, test_size: int | None = None) -> Dataset:
    """The ``chorales`` data set: 297 train and 74 test chorales (binarization ignored: the rolls are 0/1)."""
    train, test = chorales("train"), chorales("test")
    n_train, n_test = _split_sizes(train_size, test_size, len(train.x), len(test.x))
    return _sequence_dataset("chorales", Sequences(train.x[:n_train], train.mask[:n_train]),
                             Sequences(test.x[:n_test], test.mask[:n_test]))


SOURCES = {
    "lds_video": Source(load_lds_video, "linear dynamical system video, 4x4 pixels, T=20, known A and C, mask: "
                        "1,000 train, 200 test", ("mask",), "sequences"),
    "healing_mnist": Source(load_healing_mnist, "rotating MNIST digits, T=10, noise, 60% pixels missing (mask), "
                            "labels y: 10,000 train, 2,000 test by default", ("mask", "y"), "sequences"),
    "chorales": Source(load_chorales, "Bach chorales (music21), 88-key piano rolls per quarter note, in C, T<=193, "
                       "mask on padding: 297 train, 74 test", ("mask",), "sequences"),
}
