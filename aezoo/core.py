"""The map room: the Autoencoder type, the Engine protocol, FitResult, configs and save/load."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from pyro.nn import PyroModule
from torch import Tensor

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"


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
    """

    def __init__(self, model: PyroModule, guide: PyroModule, config: Any, name: str) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self.config = config
        self.name = name

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None):
        return self.model(x, *covariates, num_data=num_data)

    def validate(self, x: Tensor, *covariates: Tensor) -> None:
        """Raise ``ValueError`` with advice when ``x`` does not fit the model (see the model's docs)."""
        check = getattr(self.model, "validate", None)
        if check is not None:
            check(x, *covariates)


@dataclass
class FitResult:
    """What an engine returns.

    Attributes:
        losses: ``(E,)`` negative bound per epoch, nats per datum; empty for MCMC.
        samples: MCMC draws, site -> ``(C, S, *site_shape)``; empty for optimisation.
        stats: engine-specific values, e.g. ``{"train_seconds": ()}``.
    """

    losses: Tensor
    samples: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)


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
    raise TypeError(f"{key}: fields of type {hint} cannot be set from text")


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
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    atomic_torch_save({"model": ae.state_dict()}, run_dir / CHECKPOINT_FILE)
    return run_dir


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file then rename, so an interruption never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


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


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """Rebuild the autoencoder of a run folder written by :func:`save` or ``aezoo fit``.

    Raises:
        FileNotFoundError: the folder has no ``config.json`` or ``checkpoint.pt``.
        RuntimeError: a corrupt checkpoint, or one that does not match the config.
    """
    from aezoo.models import MODELS

    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    spec = json.loads(cfg_path.read_text())["model"]
    if spec["name"] not in MODELS:
        raise ValueError(f"unknown model {spec['name']!r} in {cfg_path}; known: {sorted(MODELS)}")
    module = MODELS[spec["name"]]
    ae = module.build(config_from_dict(module.Config, spec["config"]))
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    try:
        ae.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise RuntimeError(f"checkpoint in {run_dir} does not match its config.json: {err}") from err
    return ae.to(device)
