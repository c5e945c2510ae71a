"""A weather-like spatiotemporal field: a seeded separable space-time GP seen at stations with gaps.

``weather_field`` stands in for the spatiotemporal experiments of the Markovian GP-VAE paper
("Markovian Gaussian Process Variational Autoencoders", Zhu et al., arXiv:2207.05543), whose
real weather records are not bundled. For each of the ``N`` sequences (e.g. station networks
or years), on ``D_x = side^2`` stations on the unit square over ``T`` days::

    f ~ GP(0, k_t(t, t') k_s(s, s'))               k_t Matern-3/2 (lengthscale ``time_scale`` days),
                                                   k_s RBF (lengthscale ``space_scale``), variance 1
    f(s, t) += drift: a plane wave cos(w . s - v t + phi) with a random direction per sequence
    x = f + N(0, noise^2); each entry missing with probability ``p_missing``     x: (N, T, D_x)

drawn exactly as ``L_t E L_s^T`` (Kronecker factors of the separable covariance, ``E`` standard
normal). The wave adds an advected pattern (a front moving across the stations at ``speed``
per day). ``mask`` is True where observed; missing entries of ``x`` are 0; ``truth`` is the
noise-free field (the imputation target).
"""

from __future__ import annotations

import math

import torch

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes
from aezoo.data.sequences import Sequences, _sequence_dataset


def _matern32(t: torch.Tensor, lengthscale: float) -> torch.Tensor:
    r = math.sqrt(3) * (t[:, None] - t[None, :]).abs() / lengthscale
    return (1 + r) * torch.exp(-r)


def weather_field(n: int, T: int = 30, side: int = 5, time_scale: float = 5.0, space_scale: float = 0.4,
                  wave_amplitude: float = 0.7, speed: float = 0.15, noise: float = 0.1, p_missing: float = 0.5,
                  seed: int = 0) -> Sequences:
    """``n`` seeded station-by-day fields; see the module docstring.

    Args:
        n: number of sequences ``N``.
        T: days per sequence.
        side: stations per side of the square grid, ``D_x = side ** 2``.
        time_scale: temporal Matern-3/2 lengthscale, in days.
        space_scale: spatial RBF lengthscale, in units of the square's side.
        wave_amplitude: amplitude of the advected plane wave (0: a pure GP).
        speed: the wave's phase speed, in squares' sides per day.
        noise: observation noise sd (the field has unit GP variance).
        p_missing: probability that an entry is missing, completely at random.
        seed: seed of the generator (the same seed gives the same data).

    Returns:
        :class:`Sequences` with ``x`` ``(n, T, D_x)``, ``mask`` ``(n, T, D_x)`` bool and ``truth``.

    Raises:
        ValueError: a size below 1, a non-positive scale, or ``p_missing`` outside [0, 1).
    """
    if min(n, T, side) < 1:
        raise ValueError(f"n, T and side must be at least 1, got {n}, {T}, {side}")
    if min(time_scale, space_scale) <= 0 or noise < 0 or wave_amplitude < 0:
        raise ValueError("time_scale and space_scale must be positive, noise and wave_amplitude non-negative")
    if not 0 <= p_missing < 1:
        raise ValueError(f"p_missing must lie in [0, 1), got {p_missing}")
    g = torch.Generator().manual_seed(seed)
    days = torch.arange(T, dtype=torch.float64)
    axis = torch.linspace(0, 1, side, dtype=torch.float64)
    stations = torch.cartesian_prod(axis, axis)  # (D_x, 2)
    K_s = torch.exp(-0.5 * torch.cdist(stations, stations) ** 2 / space_scale**2)
    eye_t, eye_s = torch.eye(T, dtype=torch.float64), torch.eye(side**2, dtype=torch.float64)
    L_t = torch.linalg.cholesky(_matern32(days, time_scale) + 1e-6 * eye_t)
    L_s = torch.linalg.cholesky(K_s + 1e-6 * eye_s)
    E = torch.randn(n, T, side**2, generator=g, dtype=torch.float64)
    field = L_t @ E @ L_s.T  # (n, T, D_x): covariance k_t x k_s
    direction = torch.rand(n, 1, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    phase = torch.rand(n, 1, 1, generator=g, dtype=torch.float64) * 2 * math.pi
    along = stations[:, 0] * torch.cos(direction) + stations[:, 1] * torch.sin(direction)  # (n, 1, D_x)
    wave = torch.cos(2 * math.pi * (along - speed * days[:, None]) + phase)  # wavelength 1 side
    truth = (field + wave_amplitude * wave).float()
    x = truth + noise * torch.randn(truth.shape, generator=g)
    mask = torch.rand(truth.shape, generator=g) >= p_missing
    return Sequences(x.where(mask, 0.0), mask, truth=truth)


def load_weather_field(binarization: str = "none", train_size: int | None = None,
                       test_size: int | None = None) -> Dataset:
    """The ``weather_field`` data set: 1,000 train and 200 test sequences by default (binarization ignored)."""
    n_train, n_test = _split_sizes(train_size or 1000, test_size or 200, None, None)
    seqs = weather_field(n_train + n_test, seed=STATIC_SEED)
    return _sequence_dataset("weather_field", Sequences(seqs.x[:n_train], seqs.mask[:n_train]),
                             Sequences(seqs.x[n_train:], seqs.mask[n_train:], truth=seqs.truth[n_train:]))


SOURCES = {
    "weather_field": Source(load_weather_field, "weather-like field: separable space-time GP plus an advected wave "
                            "on 5x5 stations, T=30 days, noise 0.1, 50% missing (mask): 1,000 train, 200 test",
                            ("mask",), "sequences"),
}
