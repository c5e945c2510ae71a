"""Synthetic data: draws from a model's own ``example_data``, with all of its covariates.

The data layer imports no model: :mod:`aezoo.runs` hands the model's ``example_data`` in as
``example(n, seed) -> (x, *covariates)`` together with the covariates' names and kinds.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from aezoo.data.base import STATIC_SEED, Dataset, Source, _split_sizes


def load_synthetic(binarization: str = "none", train_size: int | None = None, test_size: int | None = None, *,
                   example: Callable[[int, int], tuple[Tensor, ...]] | None = None,
                   covariates: tuple[str, ...] = (), kinds: dict[str, str] | None = None,
                   num_classes: int | None = None) -> Dataset:
    """``train_size + test_size`` draws (default 1,000 + 200), seeded, split in that order.

    Args:
        binarization: ignored; the data are as the model draws them.
        example: the model's ``example_data`` bound to its config.
        covariates, kinds: names and kinds of what ``example`` returns after ``x``.
        num_classes: the model's number of classes, for a label covariate.

    Raises:
        ValueError: no ``example`` (the synthetic data set needs a model), or bad sizes.
    """
    if example is None:
        raise ValueError("the synthetic dataset needs a model: it draws the model's example_data")
    n_train, n_test = _split_sizes(train_size or 1000, test_size or 200, None, None)
    x, *covs = example(n_train + n_test, STATIC_SEED)
    named = dict(zip(covariates, covs))
    return Dataset("synthetic", x[:n_train].float(), x[n_train:].float(), "none",
                   train_covariates={k: v[:n_train] for k, v in named.items()},
                   test_covariates={k: v[n_train:] for k, v in named.items()},
                   kinds={k: (kinds or {}).get(k, "") for k in named}, num_classes=num_classes)


SOURCES = {"synthetic": Source(load_synthetic, "draws from the model's own example_data with its covariates "
                               "(1,000 train, 200 test by default)")}
