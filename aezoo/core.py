"""The map room: the Autoencoder type, covariates, the Engine protocol, FitResult, configs and save.

:func:`aezoo.load` (rebuilding a saved run) lives beside the model registry in :mod:`aezoo.models`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pyro
import torch
from pyro.nn import PyroModule
from torch import Tensor

# Each PyroModule keeps its parameters to itself instead of in Pyro's global param store, so that two
# models built in one process never share parameters by name (an AutoNormal guide's "locs.w" would).
pyro.settings.set(module_local_params=True)

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"


COVARIATE_KINDS = ("label", "continuous", "mask", "time", "graph", "factor", "index")


@dataclass(frozen=True)
class Covariate:
    """A named input that a model consumes after ``x``: ``(x, *covariates, num_data=None)``.

    Covariates are optional by design, as in Pyro's ``contrib/cevae``: a model is called with
    ``None`` for one the data lack, and then samples (or enumerates) it, uses a stated default, or
    raises a ``ValueError`` naming it. ``required`` says which of these a model does: True when
    it raises, so that ``aezoo list`` and ``aezoo fit`` can tell which data sets apply.

    Attributes:
        name: ``"y"`` (labels), ``"c"`` (continuous conditions), ``"mask"``, ``"t"`` (times), ...
        kind: one of :data:`COVARIATE_KINDS`: ``label`` ``(N,)`` int64 in ``[0, num_classes)``;
            ``continuous`` ``(N,)`` or ``(N, D_c)`` float; ``mask`` bool, True where observed, ``x``'s
            shape or ``(N, M)`` (one flag per modality, ``mvae``'s ``present``); ``time`` ``(N, T)``
            float; ``graph`` ``(N, V, V)`` float, an adjacency (data with one marks a graph data set,
            :attr:`aezoo.data.Dataset.layout` ``"graphs"``); ``factor`` ``(N, F)`` int64 indices of known
            generative factors (``sprites``' ``factors``), kept as integers, read by the disentanglement
            metrics (:mod:`aezoo.diagnostics.disentanglement`), not by a model.
            ``index`` ``(N,)`` int64, the datum's position in the training set (per-datum guide parameters,
            ``pv_rnn``'s adaptive vectors); :meth:`aezoo.data.Dataset.arrays` gives ``arange(N)`` when data lack it.
        required: the model raises when it is ``None`` (otherwise it samples it or uses a default).
        doc: what the model does with it, and with ``None``.
    """

    name: str
    kind: str
    required: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COVARIATE_KINDS:
            raise ValueError(f"unknown covariate kind {self.kind!r}; choose one of {COVARIATE_KINDS}")


class Autoencoder(PyroModule):
    """A generative model p(x, z) paired with an amortized guide q(z | x).

    Both are called as ``(x, *covariates, num_data=None)``; ``x`` is ``(B, D_x)`` and
    ``num_data`` is the dataset size ``N`` that scales the ``"data"`` plate of a minibatch.
    Holding both as sub-modules gives every parameter one name, so ``parameters()``,
    ``to(device)`` and ``state_dict()`` cover the model and the guide together.

    Args:
        model: the generative model (``pyro.sample`` sites; observed sites start with ``x``).
        guide: the amortized guide over the model's latent sites.
        config: the frozen dataclass the pair was built from.
        name: the registry key of the model, e.g. ``"vae"``.
        covariates: what follows ``x`` in every call, in order (:class:`Covariate`); runs,
            engines and diagnostics pass exactly these, by name.
    """

    def __init__(self, model: PyroModule, guide: PyroModule, config: Any, name: str,
                 covariates: tuple[Covariate, ...] = ()) -> None:
        if not pyro.settings.get("module_local_params"):
            raise ValueError("aezoo needs pyro.settings.set(module_local_params=True) (set when aezoo is imported, "
                             "turned off since): with Pyro's global param store two models in one process share "
                             "parameters of the same name, and the second one trains from the first's")
        super().__init__()
        self.model = model
        self.guide = guide
        self.config = config
        self.name = name
        self.covariates = tuple(covariates)

    @property
    def covariate_names(self) -> tuple[str, ...]:
        """The names of :attr:`covariates`, in call order."""
        return tuple(c.name for c in self.covariates)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None):
        return self.model(x, *covariates, num_data=num_data)

    def prepare(self, *data) -> tuple:
        """``(x, *covariates)`` as tensors the model takes: numpy arrays become tensors, and ``x`` and the
        ``continuous``/``time``/``graph`` covariates take the model's floating dtype (a ``UserWarning`` names each
        conversion; ``torch.from_numpy`` of a float64 array is the common case). See :func:`as_tensors`.

        Raises:
            ValueError: no data, empty data, or an entry that is neither a tensor, an array nor None.
        """
        if not data or data[0] is None:
            raise ValueError("fit and the diagnostics need at least the data tensor x")
        params = next(iter(self.parameters()), None)
        dtype = params.dtype if params is not None and params.is_floating_point() else torch.get_default_dtype()
        kinds = tuple("float" if c.kind in ("continuous", "time", "graph") else c.kind for c in self.covariates)
        return as_tensors(data, dtype, kinds)

    def validate(self, x: Tensor, *covariates: Tensor) -> None:
        """Raise ``ValueError`` with advice when ``x`` does not fit the model (see the model's docs)."""
        check = getattr(self.model, "validate", None)
        if check is not None:
            check(x, *covariates)


FIT_KINDS = ("optimisation", "posterior_draws")


@dataclass
class FitResult:
    """What an engine returns.

    Attributes:
        losses: ``(E,)`` negative bound per epoch, nats per datum; empty for MCMC.
        samples: MCMC draws, site -> ``(C, S, *site_shape)``; empty for optimisation.
        stats: engine-specific values, e.g. ``{"train_seconds": ()}``.
        kind: ``"optimisation"`` (trained parameters, ``losses``) or ``"posterior_draws"``
            (``samples`` of the latent sites; parameters unchanged).
    """

    losses: Tensor
    samples: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)
    kind: str = "optimisation"

    def __post_init__(self) -> None:
        if self.kind not in FIT_KINDS:
            raise ValueError(f"unknown FitResult kind {self.kind!r}; choose one of {FIT_KINDS}")

    def flat_samples(self) -> dict[str, Tensor]:
        """:attr:`samples` with chains one after another: site -> ``(C * S, ...)``."""
        return flatten_draws(self.samples)


def flatten_draws(samples: dict[str, Tensor]) -> dict[str, Tensor]:
    """Site -> ``(C, S, ...)`` draws as site -> ``(C * S, ...)``, chains one after another."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()}


Data = tuple  # (x, *covariates): tensors with the datum first, None for an absent covariate


def rows(data: Data, index) -> Data:
    """Each tensor of ``data`` indexed by ``index`` (a slice or index tensor) on its first dim; None stays None."""
    return tuple(None if d is None else d[index] for d in data)


def to_device(data: Data, device) -> Data:
    """Each tensor of ``data`` moved to ``device``; None stays None."""
    return tuple(None if d is None else d.to(device) for d in data)


def as_tensors(data: tuple, dtype: torch.dtype, names: tuple[str, ...] = ()) -> tuple:
    """User data as tensors: numpy arrays become tensors, and floating or integer ``x`` (and
    covariates of kind ``continuous``/``time``, listed in ``names``) take the model's ``dtype``,
    with a ``UserWarning`` that names the conversion once per call.

    Args:
        data: ``(x, *covariates)``; None stays None.
        dtype: the model's floating dtype.
        names: per entry of ``data`` after ``x``, ``"float"`` to cast like ``x`` or anything else to keep.

    Raises:
        ValueError: an entry that is neither a tensor, an array nor None, or an empty ``x``.
    """
    out, notes = [], []
    for i, d in enumerate(data):
        if d is None:
            out.append(None)
            continue
        if isinstance(d, np.ndarray):
            if d.dtype == object or not (np.issubdtype(d.dtype, np.number) or d.dtype == bool):
                raise ValueError(f"data entry {i} is a numpy array of {d.dtype}; pass numbers")
            notes.append(f"entry {i}: numpy {d.dtype} -> torch")
            d = torch.from_numpy(np.ascontiguousarray(d))
        elif not isinstance(d, torch.Tensor):
            raise ValueError(f"data entry {i} is a {type(d).__name__}; pass a torch tensor or a numpy array")
        cast = i == 0 or (i - 1 < len(names) and names[i - 1] == "float" and d.dtype != torch.bool)
        if cast and d.dtype != dtype:
            notes.append(f"entry {i}: {d.dtype} -> {dtype}")
            d = d.to(dtype)
        out.append(d)
    if out and out[0] is not None and len(out[0]) == 0:
        raise ValueError("the data are empty (x has 0 rows); pass at least one datum")
    if notes:
        warnings.warn(f"aezoo converted the data to the model's dtype ({'; '.join(notes)})", UserWarning, stacklevel=3)
    return tuple(out)


def check_lengths(data: Data) -> int:
    """``N``, the common length of the tensors of ``data``; ``ValueError`` naming the lengths otherwise."""
    if not data or data[0] is None:
        raise ValueError("fit and the diagnostics need at least the data tensor x")
    n = len(data[0])
    bad = [i for i, d in enumerate(data) if d is not None and len(d) != n]
    if bad:
        raise ValueError(f"every covariate needs one row per datum: x has {n} rows but covariate(s) at position(s) "
                         f"{bad} have {[len(data[i]) for i in bad]}")
    return n


class Engine(Protocol):
    """An inference engine: a frozen dataclass whose fields are its config.

    ``fit`` trains ``ae`` in place on ``data`` (``x`` ``(N, D_x)`` then covariates); ``transform``
    maps each minibatch before use (e.g. dynamic binarization) and ``checkpoint`` is a file the
    engine saves to after each epoch and resumes from when it exists.
    """

    def fit(
        self,
        ae: Autoencoder,
        *data: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        checkpoint: str | Path | None = None,
    ) -> FitResult: ...


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type, values: dict[str, Any]):
    """Rebuild a config dataclass from :func:`config_to_dict` output (lists become tuples).

    Raises:
        ValueError: a key is not a field of ``cls``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__module__}.{cls.__name__} keys {unknown}; valid keys: {sorted(fields)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _parse_as(hint: Any, text: str, key: str) -> Any:
    """Parse ``text`` as the declared field type ``hint`` (int, float, bool, str, tuple[int, ...], X | None)."""
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]
        if text.lower() in ("none", "null"):
            return None
        (hint,) = [a for a in args if a is not type(None)]
    origin = typing.get_origin(hint) or hint
    try:
        if origin is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if origin is tuple:
            item = (typing.get_args(hint) or (str,))[0]
            return tuple(item(v) for v in text.split(",") if v.strip())
        if origin in (int, float, str):
            return origin(text)
    except ValueError as err:
        raise ValueError(f"cannot read {key}={text!r} as {hint}") from err
    raise ValueError(f"{key}: a field of type {hint} cannot be set from the command line; set it from Python")


def key_values(texts: list[str] | tuple[str, ...], what: str, example: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` as ``{"a": "1", "b": "x"}``, keys and values stripped.

    Raises:
        ValueError: a text without ``=``; the message names ``what`` takes them and shows ``example``.
    """
    out = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"{what} takes key=value, e.g. {example}; got {text!r}")
        out[key.strip()] = value.strip()
    return out


def config_with(cfg: Any, overrides: dict[str, str], prefix: str = "") -> Any:
    """A copy of a frozen config with string overrides parsed to each field's type.

    Args:
        cfg: a config dataclass instance.
        overrides: field name -> text, e.g. ``{"z_dim": "10", "hidden_dims": "400,400"}``; parsed
            as the field's declared type (``none`` clears an optional field).
        prefix: shown in error messages, e.g. ``"model."``.

    Raises:
        ValueError: an unknown key (the message lists the valid ones) or an unparsable value.
    """
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, text in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown setting {prefix}{key}; valid: {', '.join(prefix + f for f in sorted(fields))}")
        changes[key] = _parse_as(hints[key], text, prefix + key)
    return dataclasses.replace(cfg, **changes)


def save(ae: Autoencoder, run_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save ``ae`` as a run folder: ``config.json`` (model name and config) and ``checkpoint.pt``.

    Args:
        ae: the autoencoder.
        run_dir: folder, created if absent.
        extra: more JSON-ready entries for ``config.json`` (engine, data, seed, versions).

    Returns:
        The run folder.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"model": {"name": ae.name, "config": config_to_dict(ae.config)}, **(extra or {})}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    atomic_torch_save({"model": ae.state_dict()}, run_dir / CHECKPOINT_FILE)
    return run_dir


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file then rename, so an interruption never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path`` in one rename (readers
    see the old file or the new one, never half of one), on failure it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        RuntimeError: the file is not a readable checkpoint (says to delete it and refit).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; fit the run first (aezoo fit ... --out {path.parent})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise RuntimeError(
            f"checkpoint {path} is corrupt or not an aezoo checkpoint ({err.__class__.__name__}: {err}); "
            "delete it and fit again"
        ) from err
