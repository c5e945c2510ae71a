"""User data from a file: ``aezoo fit MODEL --data path/to/file.npz`` (or ``.npy`` for ``x`` alone).

An ``.npz`` holds the array ``x`` ``(N, D_x)`` (or ``(N, T, D_x)`` sequences) and optionally the
covariates ``y`` (labels, integers ``0 .. num_classes - 1``), ``c`` (continuous conditions
``(N,)`` or ``(N, D_c)``), ``mask`` (bool, ``x``'s shape, True where observed), ``t``
(times) and ``factors`` (``(N, F)`` non-negative integer indices of known generative factors:
the evaluation then scores disentanglement), and a scalar ``num_classes``. A test split is
taken from ``x_test`` (with ``y_test``, ``c_test``, ... for each covariate) when the file holds
one; otherwise a seeded random fifth of the data is held out (at least one datum). Everything is
checked before any fitting starts.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from aezoo.data.base import COVARIATE_KINDS, Dataset, _split_sizes, binarize_splits

SUFFIXES = (".npz", ".npy")
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def is_file_name(name: str) -> bool:
    """True when ``--data`` names a file rather than a registry key."""
    return name.endswith(SUFFIXES) or "/" in name


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}; give an existing .npz (arrays x, optional y, c, mask, t) "
                                "or .npy (x only)")
    if path.suffix not in SUFFIXES:
        raise ValueError(f"data file {path} must end in .npz or .npy")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"x": loaded}
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"cannot read {path} as numpy data ({err}); save it with numpy.savez(path, x=..., y=...) "
                         "from numeric arrays (object arrays are refused)") from err


def _tensor(name: str, a: np.ndarray, path: Path) -> torch.Tensor:
    if a.dtype == bool:
        return torch.as_tensor(a)
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"array {name!r} in {path} has dtype {a.dtype}; it must be numeric (or bool for mask)")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f"array {name!r} in {path} contains {int((~np.isfinite(a)).sum())} NaN or infinite values; "
                         "drop or impute them (missing entries of x go in a mask array instead)")
    return torch.as_tensor(a)


def _covariate(name: str, t: torch.Tensor, x: torch.Tensor, num_classes: int | None, path: Path) -> torch.Tensor:
    kind = COVARIATE_KINDS[name.removesuffix("_test")]
    if len(t) != len(x):
        raise ValueError(f"covariate {name!r} in {path} has {len(t)} rows but its x has {len(x)}: give one row "
                         "per datum")
    if kind == "label":
        if t.dim() != 1 or t.is_floating_point() and not torch.equal(t, t.round()) or t.dtype == torch.bool:
            raise ValueError(f"labels {name!r} in {path} must be integers of shape (N,), got {t.dtype} "
                             f"{tuple(t.shape)}")
        t = t.long()
        bad = (t < 0) | (t >= num_classes) if num_classes is not None else t < 0
        if bad.any():
            declared = f"0 .. {num_classes - 1} (num_classes={num_classes})" if num_classes else "0 or more"
            raise ValueError(f"labels {name!r} in {path} must lie in {declared}; {int(bad.sum())} do not "
                             f"(e.g. {t[bad][0].item()}); renumber the classes 0 .. K-1")
        return t
    if kind == "factor":
        if t.dim() != 2 or t.dtype == torch.bool or t.is_floating_point() and not torch.equal(t, t.round()) \
                or (t.numel() and t.min() < 0):
            raise ValueError(f"factors {name!r} in {path} must be non-negative integer indices of shape (N, F), got "
                             f"{t.dtype} {tuple(t.shape)}")
        return t.long()
    if kind == "mask":
        if t.dtype != torch.bool or t.shape != x.shape:
            raise ValueError(f"mask {name!r} in {path} must be bool with x's shape {tuple(x.shape)}, got {t.dtype} "
                             f"{tuple(t.shape)}")
        return t
    return t.float()


def load_file(path: str | Path, binarization: str = "none", train_size: int | None = None,
              test_size: int | None = None) -> Dataset:
    """Read and check a user data file (see the module docstring).

    Args:
        path: an ``.npz`` or ``.npy`` file.
        binarization: ``dynamic`` / ``static`` need ``x`` in [0, 1] (probabilities); ``none`` keeps ``x``.
        train_size, test_size: keep the first N of each split.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unreadable file, no ``x``, an unknown array name, a non-numeric array, NaN,
            ``x`` of the wrong rank, covariates of another length than ``x``, labels that are not
            integers in ``0 .. num_classes - 1``, or ``x`` outside [0, 1] under a binarization.
    """
    path = Path(path)
    arrays = _read(path)
    if "x" not in arrays:
        raise ValueError(f"{path} has no array 'x' (it has {sorted(arrays)}); save the data as x, e.g. "
                         "numpy.savez(path, x=images, y=labels)")
    allowed = {"x", "num_classes"} | {n + s for n in ("x", *COVARIATE_KINDS) for s in ("", "_test")}
    unknown = sorted(set(arrays) - allowed)
    if unknown:
        raise ValueError(f"{path} holds arrays {unknown} that aezoo does not know; allowed: x, "
                         f"{', '.join(COVARIATE_KINDS)} and each with _test, and num_classes")
    num_classes = int(arrays.pop("num_classes")) if "num_classes" in arrays else None
    data = {k: _tensor(k, a, path) for k, a in arrays.items()}
    x = data.pop("x").float()
    if x.dim() not in (2, 3) or len(x) == 0:
        raise ValueError(f"x in {path} must be (N, D_x) vectors or (N, T, D_x) sequences with N >= 1, got shape "
                         f"{tuple(x.shape)}; flatten images to vectors")
    x_test = data.pop("x_test").float() if "x_test" in data else None
    names = [k for k in data if not k.endswith("_test")]
    if x_test is None and any(k.endswith("_test") for k in data):
        raise ValueError(f"{path} has {sorted(k for k in data if k.endswith('_test'))} but no x_test")
    if x_test is not None and sorted(k.removesuffix("_test") for k in data if k.endswith("_test")) != sorted(names):
        raise ValueError(f"{path}: each covariate needs its test array too (e.g. y and y_test), got {sorted(data)}")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_test in {path} has shape {tuple(x_test.shape)}, x has {tuple(x.shape)}: the sizes "
                         "after N must agree")
    if "y" in names and num_classes is None:
        num_classes = int(data["y"].max()) + 1 if data["y"].numel() else None
    train_covs = {k: _covariate(k, data[k], x, num_classes, path) for k in names}
    if x_test is None:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_test = max(1, round(TEST_FRACTION * len(x))) if len(x) > 1 else 0
        if n_test == 0:
            raise ValueError(f"{path} holds one datum: a test split needs at least two (or give x_test)")
        test_idx, train_idx = order[:n_test], order[n_test:]
        x, x_test = x[train_idx], x[test_idx]
        test_covs = {k: v[test_idx] for k, v in train_covs.items()}
        train_covs = {k: v[train_idx] for k, v in train_covs.items()}
    else:
        test_covs = {k: _covariate(k + "_test", data[k + "_test"], x_test, num_classes, path) for k in names}
    if binarization != "none" and (x.min() < 0 or x.max() > 1 or x_test.min() < 0 or x_test.max() > 1):
        raise ValueError(f"x in {path} has values outside [0, 1], so it cannot be binarized ({binarization}); "
                         "pass --binarize none (and e.g. --set model.likelihood=gaussian for real values)")
    n_train, n_test = _split_sizes(train_size, test_size, len(x), len(x_test))
    train, test = binarize_splits(x[:n_train], x_test[:n_test], binarization)
    side = int(round(x.shape[-1] ** 0.5))
    return Dataset(str(path), train, test, binarization, (side, side) if side * side == x.shape[-1] else None,
                   {k: v[:n_train] for k, v in train_covs.items()}, {k: v[:n_test] for k, v in test_covs.items()},
                   num_classes=num_classes)
