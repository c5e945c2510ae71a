"""Time-series generation benchmarks: ``x`` ``(N, T, D_x)``, with ``mask`` and times ``t`` for irregular data.

- ``sines``: TimeGAN's synthetic sines [1]: ``D_x = 5`` channels, each ``sin(f j + p)`` for steps
  ``j = 0..T-1`` with frequency ``f ~ U(0, 0.1)`` and phase ``p ~ U(0, 0.1)`` drawn per sequence and
  channel, mapped to [0, 1] by ``(s + 1) / 2``; ``T = 24``, seeded (:func:`sines`).
- ``sines_irregular``: the same sequences with a fixed seeded fraction ``drop`` of the time steps
  removed per sequence (30%, 50% or 70% as in [2]); the kept steps keep their times in the
  covariate ``t`` ``(N, T_kept)`` (:func:`drop_steps`); ``mask`` is all True.
- ``sunspots`` (yearly 1700-2008) and ``co2`` (weekly Mauna Loa 1958-2001, gaps filled by linear
  interpolation) from :mod:`statsmodels.datasets` (shipped with statsmodels, read offline): the
  first ``train_fraction`` of the series is train and the rest test (chronological), each cut
  into all sliding windows of length ``T``, standardised with the train part's mean and standard
  deviation (:func:`windows`).

Every data set has the covariates ``mask`` (all True) and ``t`` (steps ``0..T-1`` for regular data).

References:
    1. Time-series Generative Adversarial Networks, Yoon, Jarrett & van der Schaar, NeurIPS 2019.
    2. Generative Modeling of Regular and Irregular Time Series Data via Koopman VAEs, Naiman,
       Erichson, Ren, Mahoney & Azencot, arXiv:2310.02619.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes

SEQ_LEN = 24
DROPS = (0.3, 0.5, 0.7)
STATSMODELS_INSTALL = "pip install statsmodels"


def sines(n: int, T: int = SEQ_LEN, channels: int = 5, seed: int = 0) -> Tensor:
    """``(n, T, channels)`` TimeGAN sines [1] in [0, 1]: ``(sin(f j + p) + 1) / 2``, ``f, p ~ U(0, 0.1)``.

    Raises:
        ValueError: a size below 1.
    """
    if min(n, T, channels) < 1:
        raise ValueError(f"n, T and channels must be >= 1, got {n}, {T}, {channels}")
    g = torch.Generator().manual_seed(seed)
    freq, phase = torch.rand(2, n, 1, channels, generator=g) * 0.1
    return (torch.sin(freq * torch.arange(T, dtype=torch.float32)[:, None] + phase) + 1) / 2


def drop_steps(x: Tensor, drop: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Remove ``round(drop * T)`` time steps of each sequence, chosen at random (seeded), keeping order.

    Args:
        x: ``(N, T, D_x)`` regular sequences at times ``0..T-1``.
        drop: the fraction of steps removed, in [0, 1).

    Returns:
        ``(x_kept, t)``: ``(N, T_kept, D_x)`` and their float times ``(N, T_kept)``, increasing.

    Raises:
        ValueError: ``drop`` outside [0, 1) or ``x`` not ``(N, T, D_x)``.
    """
    if x.dim() != 3:
        raise ValueError(f"expected sequences of shape (N, T, D_x), got {tuple(x.shape)}")
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    N, T, _ = x.shape
    keep = T - round(drop * T)
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.rand(N, T, generator=g).argsort(-1)[:, :keep].sort(-1).values  # (N, T_kept)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])), idx.float()


def windows(series: np.ndarray, T: int = SEQ_LEN, train_fraction: float = 0.8) -> tuple[Tensor, Tensor]:
    """Chronological train/test sliding windows of a ``(L,)`` or ``(L, D_x)`` series, standardised by train.

    The first ``floor(train_fraction * L)`` values are train, the rest test; each part gives all its
    windows of length ``T`` (stride 1), so no window spans both.

    Returns:
        ``(train, test)``: ``(N_train, T, D_x)`` and ``(N_test, T, D_x)`` float32.

    Raises:
        ValueError: a part shorter than ``T`` or ``train_fraction`` outside (0, 1).
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    values = np.asarray(series, dtype=np.float64).reshape(len(series), -1)
    cut = int(train_fraction * len(values))
    if min(cut, len(values) - cut) < T:
        raise ValueError(f"a series of length {len(values)} split at {cut} is too short for windows of T={T}")
    mean, std = values[:cut].mean(0), values[:cut].std(0)
    scaled = torch.as_tensor((values - mean) / std, dtype=torch.float32)
    parts = scaled[:cut], scaled[cut:]
    return tuple(p.unfold(0, T, 1).transpose(1, 2).contiguous() for p in parts)


def _statsmodels_series(name: str) -> np.ndarray:
    try:
        from statsmodels import datasets
    except ImportError:
        raise ModuleNotFoundError(f"the {name} data set comes with statsmodels; install it with: "
                                  f"{STATSMODELS_INSTALL}") from None
    if name == "sunspots":
        return datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    return datasets.co2.load_pandas().data["co2"].interpolate().to_numpy()


def _dataset(name: str, train: Tensor, test: Tensor, t_train: Tensor | None = None,
             t_test: Tensor | None = None) -> Dataset:
    def times(x: Tensor, t: Tensor | None) -> Tensor:
        return t if t is not None else torch.arange(x.shape[1], dtype=torch.float32).expand(x.shape[:2]).clone()

    return Dataset(name, train, test, "none", None,
                   {"mask": torch.ones_like(train, dtype=torch.bool), "t": times(train, t_train)},
                   {"mask": torch.ones_like(test, dtype=torch.bool), "t": times(test, t_test)})


def load_sines(binarization: str = "none", train_size: int | None = None, test_size: int | None = None,
               T: int = SEQ_LEN) -> Dataset:
    """The ``sines`` data set: 10,000 train and 1,000 test sequences by default (binarization ignored)."""
    n_train, n_test = _split_sizes(train_size or 10000, test_size or 1000, None, None)
    return _dataset("sines", sines(n_train, T, seed=STATIC_SEED), sines(n_test, T, seed=STATIC_SEED + 1))


def load_sines_irregular(binarization: str = "none", train_size: int | None = None, test_size: int | None = None,
                         drop: float = 0.3, T: int = SEQ_LEN) -> Dataset:
    """``sines`` with a fraction ``drop`` (one of 0.3, 0.5, 0.7 in [2]) of each sequence's steps removed."""
    regular = load_sines(binarization, train_size, test_size, T)
    (train, t_train), (test, t_test) = (drop_steps(regular.train, drop, STATIC_SEED),
                                        drop_steps(regular.test, drop, STATIC_SEED + 1))
    return _dataset("sines_irregular", train, test, t_train, t_test)


def _load_statsmodels(name: str, train_size: int | None, test_size: int | None, T: int) -> Dataset:
    train, test = windows(_statsmodels_series(name), T)
    n_train, n_test = _split_sizes(train_size, test_size, len(train), len(test))
    return _dataset(name, train[:n_train], test[:n_test])


def load_sunspots(binarization: str = "none", train_size: int | None = None, test_size: int | None = None,
                  T: int = SEQ_LEN) -> Dataset:
    """Yearly sunspot numbers 1700-2008 (statsmodels) as standardised windows ``(N, T, 1)``."""
    return _load_statsmodels("sunspots", train_size, test_size, T)


def load_co2(binarization: str = "none", train_size: int | None = None, test_size: int | None = None,
             T: int = SEQ_LEN) -> Dataset:
    """Weekly Mauna Loa CO2 1958-2001 (statsmodels, gaps interpolated) as standardised windows ``(N, T, 1)``."""
    return _load_statsmodels("co2", train_size, test_size, T)


SOURCES = {
    "sines": Source(load_sines, "TimeGAN sines: 5 channels, random frequency and phase, T=24, in [0, 1]: 10,000 "
                    "train, 1,000 test", ("mask", "t"), "sequences"),
    "sines_irregular": Source(load_sines_irregular, "sines with 30% (option drop=0.5, 0.7) of the steps removed, "
                              "times t: 10,000 train, 1,000 test", ("mask", "t"), "sequences"),
    "sunspots": Source(load_sunspots, "yearly sunspots 1700-2008 (statsmodels), windows T=24, standardised, "
                       "chronological 80/20 split", ("mask", "t"), "sequences"),
    "co2": Source(load_co2, "weekly Mauna Loa CO2 1958-2001 (statsmodels), windows T=24, standardised, "
                  "chronological 80/20 split", ("mask", "t"), "sequences"),
}
