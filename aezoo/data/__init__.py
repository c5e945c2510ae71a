"""Datasets: ``x`` plus named covariates, from a registry of sources or from a user's file.

:data:`DATASETS` maps each key to a :class:`Source` and is built from an explicit list of family
modules (one module per family, each exporting ``SOURCES``): images (``mnist``, ``digits``),
rotated MNIST, the MNIST quadrant task, multi-view MNIST (``mnist_views``), MNIST as pixel-row
sequences (``mnist_rows``), sequences (``lds_video``, ``healing_mnist``, ``chorales``), time series
(``sines``, ``sines_irregular``, ``sunspots``, ``co2``), a weather-like space-time field
(``weather_field``), graphs for link prediction (``sbm``, ``lfr``, ``karate``, ``les_miserables``,
Planetoid files), procedural dSprites with their factors (``sprites``, ``sprites64``) and
``synthetic`` (a model's own ``example_data``, handed in by :mod:`aezoo.runs`). :func:`load` serves
every key and any ``.npz`` / ``.npy`` path (:mod:`aezoo.data.files`). The :class:`Dataset` record,
the verified MNIST file and binarization live in :mod:`aezoo.data.base`.
"""

from __future__ import annotations

from types import ModuleType

from aezoo.data import (
    files,
    graphs,
    images,
    pixel_rows,
    quadrants,
    rotated,
    sequences,
    series,
    sprites,
    synthetic,
    views,
    weather,
)
from aezoo.data.base import (
    BINARIZATIONS,
    COVARIATE_KINDS,
    MNIST_INSTALL,
    MNIST_SHA256,
    STATIC_SEED,
    Dataset,
    Source,
    dynamic_binarize,
    mnist_path,
    read_mnist,
)
from aezoo.data.sequences import Sequences, cache_dir, chorale_rolls, chorales, healing_mnist, lds_video, piano_roll

_FAMILIES: list[ModuleType] = [images, pixel_rows, rotated, quadrants, views, sequences, series, graphs, sprites,
                               synthetic, weather]

DATASETS: dict[str, Source] = {key: source for family in _FAMILIES for key, source in family.SOURCES.items()}


def load(name: str, binarization: str = "dynamic", train_size: int | None = None, test_size: int | None = None,
         **options) -> Dataset:
    """Load a dataset by registry key or file path.

    Args:
        name: a key of :data:`DATASETS`, or the path of an ``.npz`` / ``.npy`` file.
        binarization: one of :data:`BINARIZATIONS`; ignored by ``synthetic`` (its data are as the
            model draws them) and by the sequence data sets (grey levels with a mask covariate).
        train_size, test_size: keep the first N of each split (quick runs).
        options: passed to the source, e.g. ``example`` for ``synthetic``.

    Raises:
        ValueError: unknown name or binarization, bad sizes, ``synthetic`` without a model, or a
            user file that fails its checks (:func:`aezoo.data.files.load_file`).
        FileNotFoundError: MNIST is not installed, or no such user file.
    """
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; choose one of {BINARIZATIONS}")
    if name in DATASETS:
        return DATASETS[name].load(binarization, train_size, test_size, **options)
    if files.is_file_name(name):
        return files.load_file(name, binarization, train_size, test_size)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))} or give a .npz/.npy "
                     "file path")


__all__ = [
    "BINARIZATIONS", "COVARIATE_KINDS", "DATASETS", "MNIST_INSTALL", "MNIST_SHA256", "STATIC_SEED", "Dataset",
    "Sequences", "Source", "cache_dir", "chorale_rolls", "chorales", "dynamic_binarize", "healing_mnist",
    "lds_video", "load", "mnist_path", "piano_roll", "read_mnist",
]
