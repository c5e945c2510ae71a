"""Run folders: ``aezoo fit`` trains and evaluates a model, ``aezoo eval`` re-evaluates it.

A run folder holds ``config.json`` (model, engine, data, seed, package versions),
``checkpoint.pt``, ``losses.csv``, ``metrics.json``, ``reconstructions.png``, ``samples.png``,
``loss.png`` and ``report.html``. Fitting into a folder that already holds the same config
resumes from its last checkpoint; a different config is refused.

With an MCMC engine (``nuts``, ``hmc``, ``sghmc``) the folder also holds ``posterior_samples.pt``
(draws and per-draw statistics) and the engine's chain checkpoint ``mcmc_checkpoint.pt``;
``checkpoint.pt`` keeps the (unchanged) network parameters. MCMC runs from the command line are
for models whose latents are all global (``bayesian_ae``): sampling the local ``z`` of every
training point is a Python-API task on a handful of points (tutorial 04).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

import pyro
import torch

from aezoo import data as datasets
from aezoo import evaluations
from aezoo.catalogue import local_latents
from aezoo.checks import integer
from aezoo.core import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    Autoencoder,
    atomic_torch_save,
    atomic_write_text,
    config_to_dict,
    config_with,
    load_checkpoint,
    rows,
    to_device,
)
from aezoo.evaluations import SAMPLES_FILE
from aezoo.inference import ENGINES, distributed
from aezoo.inference.mcmc import McmcEngine
from aezoo.models import MODELS, load
from aezoo.tracking import flat_config, hparams, import_mlflow, log_mlflow, scalars, tensorboard


def versions() -> dict[str, str]:
    """Python, platform and package versions, for reproducibility records."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("aezoo", "torch", "pyro-ppl", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _choose(kind: str, name: str, choices) -> None:
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(choices))} (see `aezoo list`)")


def _split_settings(settings: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    groups: dict[str, dict[str, str]] = {"model": {}, "engine": {}}
    for key, value in settings.items():
        prefix, _, field = key.partition(".")
        if prefix not in groups or not field:
            raise ValueError(f"setting {key!r} must start with 'model.' or 'engine.', e.g. model.z_dim=10")
        groups[prefix][field] = value
    return groups["model"], groups["engine"]


def fit(
    model: str,
    data: str = "synthetic",
    engine: str | None = None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    settings: dict[str, str] | None = None,
    binarize: str = "dynamic",
    train_size: int | None = None,
    test_size: int | None = None,
    num_particles: int = 5000,
    labels: int | None = None,
    progress: bool = True,
    eval_mode: str = "full",
    val_size: int | None = None,
    mlflow: str | None = None,
    **engine_fields: Any,
) -> Path:
    """Train ``model`` on ``data`` with ``engine``, evaluate it and write the run folder.

    Args:
        model, data, engine: registry keys (``aezoo list``). ``engine=None`` takes the model
            module's ``DEFAULT_ENGINE`` (key and field values, e.g. ``wae``: ``svi`` with the MMD
            penalty), or ``svi`` when it has none; ``settings`` and ``engine_fields`` override it.
        out: run folder; default ``runs/{model}-{engine}-{data}-seed{seed}``.
        seed: seeds model initialisation, training and evaluation.
        device: ``"cpu"`` or ``"cuda"``.
        settings: ``{"model.z_dim": "10", "engine.num_particles": "5"}``-style overrides.
        binarize, train_size, test_size: see :func:`aezoo.data.load`.
        labels: keep this many training labels ``y`` (balanced over the classes, seeded) and mark the
            rest unlabelled (-1), for semi-supervised models (``m2``); None keeps every label.
        num_particles: ``K`` for the test log-likelihood.
        val_size: hold out this many training points (seeded) as validation data: the engine scores them
            after every epoch (``losses.csv`` column ``val_loss_nats_per_datum``), keeps the best epoch's model
            in ``checkpoint.best.pt`` and stops early with ``engine.patience``.
        mlflow: an MLflow tracking URI: the run's settings, per-epoch losses, headline metrics and report are
            logged there too (needs ``pip install 'aezoo[mlflow]'``; see :func:`log_mlflow`).
        eval_mode: ``"full"`` (the suite with ``num_particles`` on the whole test split), ``"quick"``
            (K = 500 on at most 500 test points, in a subfolder; see :func:`evaluate`) or ``"none"``.
        engine_fields: engine fields set directly (``epochs``, ``batch_size``, ``lr``, ``amp``); None is ignored.

    Inside a ``torchrun`` process group (:mod:`aezoo.inference.distributed`) every rank trains its share and
    rank 0 alone writes the run folder and evaluates; the other ranks return after training.

    Returns:
        The run folder.

    Raises:
        ValueError: unknown names or settings, or a folder holding a different run.
    """
    _choose("model", model, MODELS)
    if mlflow is not None:
        import_mlflow()  # refuse before anything is written when it is not installed
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"unknown --eval {eval_mode!r}; choose one of {', '.join(EVAL_MODES)}")
    check_device(device)
    integer("--num-particles", num_particles)
    defaults: dict[str, Any] = {}
    if engine is None:
        engine, defaults = getattr(MODELS[model], "DEFAULT_ENGINE", ("svi", {}))
    _choose("engine", engine, ENGINES)
    if data not in datasets.DATASETS and not datasets.files.is_file_name(data):
        _choose("dataset", data, datasets.DATASETS)
    model_sets, engine_sets = _split_settings(settings or {})
    model_cfg = config_with(MODELS[model].Config(), model_sets, "model.")
    dataset = load_data(data, binarize, train_size, test_size, model, model_cfg, labels)
    model_cfg = sized_to_data(model_cfg, dataset, model_sets)
    fields = {k: v for k, v in engine_fields.items() if v is not None}
    known = {f.name for f in dataclasses.fields(ENGINES[engine])}
    if set(fields) - known:
        raise ValueError(f"the {engine} engine has no {', '.join(sorted(set(fields) - known))} setting; "
                         f"its settings: {', '.join(sorted(known))}")
    engine_obj = dataclasses.replace(ENGINES[engine](), **{**defaults, "seed": seed, "progress": progress, **fields})
    engine_obj = config_with(engine_obj, engine_sets, "engine.")
    pyro.set_rng_seed(seed)
    ae = MODELS[model].build(model_cfg).to(device)
    train = covariates_of(ae, dataset, "train")  # refuses data that lack a required covariate, before any write
    train, val = split_validation(train, val_size, isinstance(engine_obj, McmcEngine))
    with torch.random.fork_rng(devices=[]):  # and data the model cannot take (shape, values), also before any write
        ae.validate(*(train if dataset.transform is None else (dataset.transform(train[0]), *train[1:])))
    if isinstance(engine_obj, McmcEngine):
        _refuse_local_latents(ae, train)
    out = Path(out or f"runs/{model}-{engine}-{Path(data).stem}-seed{seed}")
    config = {
        "model": {"name": model, "config": config_to_dict(model_cfg)},
        "engine": {"name": engine, "config": {k: v for k, v in config_to_dict(engine_obj).items() if k != "progress"}},
        "data": {"name": data, "binarize": binarize, "train_size": train_size, "test_size": test_size,
                 "labels": labels, "val_size": val_size},
        "seed": seed,
        "eval": {"num_particles": num_particles},
    }
    if distributed.active() and isinstance(engine_obj, McmcEngine):
        raise ValueError(f"--distributed applies to the gradient engines, not {engine}")
    if not distributed.is_main():  # a data-parallel rank > 0: train its share; rank 0 writes the folder
        engine_obj.fit(ae, *train, transform=dataset.transform, checkpoint=out / CHECKPOINT_FILE, validation=val)
        return out
    _claim(out, config, engine_obj)
    with locked(out):
        atomic_write_text(out / CONFIG_FILE, json.dumps({**config, "device": device, "versions": versions()},
                                                        indent=2) + "\n")
        if isinstance(engine_obj, McmcEngine):
            result = _sample(ae, engine_obj, train, dataset.transform, out)
        else:
            with tensorboard(out) as tb:
                result = engine_obj.fit(ae, *train, transform=dataset.transform, checkpoint=out / CHECKPOINT_FILE,
                                        validation=val, on_epoch=lambda e, values: scalars(tb, e, values))
        atomic_write_text(out / "losses.csv", _losses_csv(result))
        metrics = None
        if eval_mode != "none":
            metrics = evaluate(out, device=device, dataset=dataset, mode=eval_mode)
            with tensorboard(out) as tb:
                hparams(tb, config, metrics, Path(metrics["eval_dir"]))
        if mlflow is not None:
            log_mlflow(mlflow, out, config, result, metrics)
    return out


VAL_SEED = 20240


def split_validation(train: tuple, val_size: int | None, mcmc: bool) -> tuple[tuple, tuple | None]:
    """``(train, validation)``: ``val_size`` training points, chosen by a seeded permutation, held out.

    Raises:
        ValueError: a size outside 1..N-1, or an MCMC engine (it has no epochs to validate).
    """
    if val_size is None:
        return train, None
    n = len(train[0])
    if mcmc:
        raise ValueError("--val-size applies to the gradient engines (a validation curve per epoch); MCMC has none")
    if not 1 <= val_size < n:
        raise ValueError(f"--val-size must be between 1 and {n - 1} (the training points), got {val_size}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    return rows(train, order[val_size:].sort().values), rows(train, order[:val_size].sort().values)


def _losses_csv(result) -> str:
    val = result.stats.get("val_losses")
    head = "epoch,loss_nats_per_datum" + (",val_loss_nats_per_datum" if val is not None else "")
    lines = [f"{i + 1},{v:.6f}" + (f",{val[i]:.6f}" if val is not None else "")
             for i, v in enumerate(result.losses.tolist())]
    return "\n".join([head, *lines]) + "\n"


def check_device(device: str) -> None:
    """``ValueError`` for a device name torch does not know or a CUDA device this machine lacks."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use cpu or cuda (cuda:N)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no usable CUDA device (torch.cuda.is_available() is "
                         "False); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device}: aezoo runs on cpu or cuda")


LOCK_FILE = ".lock"
_HELD: set[Path] = set()


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold an exclusive lock (``flock`` on ``run_dir/.lock``) for the block, so that a second ``fit`` or ``eval``
    of the same folder is refused while this one runs; re-entrant within a process (fit calls evaluate).

    Raises:
        ValueError: another process holds the lock (the message gives its pid).
    """
    key = Path(run_dir).resolve()
    if key in _HELD:
        yield
        return
    fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(f"another aezoo process (pid {holder}) is fitting or evaluating {run_dir}; wait for it "
                             "to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)


def load_data(name: str, binarize: str, train_size: int | None, test_size: int | None, model: str,
              model_cfg: Any, labels: int | None = None) -> datasets.Dataset:
    """The data set ``name`` (key or file); ``synthetic`` draws the model's ``example_data`` with its covariates;
    with ``labels``, all but that many (balanced, seeded) training labels are hidden (see :func:`fit`)."""
    module = MODELS[model]
    options: dict[str, Any] = {}
    if name == "synthetic":  # the one source whose data come from the model; the data layer imports no model
        covs = getattr(module, "COVARIATES", ())
        options = {"example": lambda n, seed: module.example_data(model_cfg, n, seed=seed),
                   "covariates": tuple(c.name for c in covs), "kinds": {c.name: c.kind for c in covs},
                   "num_classes": getattr(model_cfg, "num_classes", None)}
    dataset = datasets.load(name, binarize, train_size, test_size, **options)
    if labels is not None:
        dataset.train_covariates["y"] = keep_labels(dataset, labels)
    return dataset


def keep_labels(dataset: datasets.Dataset, n: int) -> torch.Tensor:
    """The training labels with all but ``n`` hidden (-1): ``n / K`` of each class, first in a seeded shuffle.

    Raises:
        ValueError: the data have no labels ``y``, or ``n`` is not a positive multiple of the number
            of classes that the data can supply.
    """
    y = dataset.train_covariates.get("y")
    if y is None:
        raise ValueError(f"--labels needs labelled data (a covariate 'y'); {dataset.name} has none")
    k = dataset.num_classes or int(y.max()) + 1
    if n < k or n % k:
        raise ValueError(f"--labels must be a positive multiple of the {k} classes (balanced labels), got {n}")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(datasets.STATIC_SEED))
    keep = torch.cat([order[y[order] == c][: n // k] for c in range(k)])
    if len(keep) < n:
        raise ValueError(f"--labels {n}: the training data have fewer than {n // k} images of some class")
    out = torch.full_like(y, -1)
    out[keep] = y[keep]
    return out


def sized_to_data(cfg: Any, dataset: datasets.Dataset, explicit: dict[str, str]) -> Any:
    """``cfg`` with the sizes the data decide unless set: ``x_dim``, ``num_classes``, ``c_dim``, ``image_shape``;
    for graphs ``num_nodes`` and ``num_features``."""
    c, features = dataset.train_covariates.get("c"), dataset.train_covariates.get("features")
    sizes = {"x_dim": dataset.train.shape[-1], "num_classes": dataset.num_classes,
             "c_dim": None if c is None else c.reshape(len(c), -1).shape[-1], "image_shape": dataset.image_shape,
             "num_nodes": dataset.train.shape[-1], "num_features": None if features is None else features.shape[-1]}
    fields = {f.name for f in dataclasses.fields(cfg)}
    changes = {k: v for k, v in sizes.items() if k in fields and k not in explicit and v is not None}
    return dataclasses.replace(cfg, **changes)


def covariates_of(ae: Autoencoder, dataset: datasets.Dataset, split: str) -> tuple:
    """``(x, *covariates)`` of ``split`` in the model's order; None for an optional covariate the data lack.

    Raises:
        ValueError: the data lack a covariate the model requires, or give one of another kind
            (the message names the covariate and the data sets that provide it).
    """
    for cov in ae.covariates:
        kind = dataset.kinds.get(cov.name)
        if kind is None and cov.required:
            have = [k for k, s in datasets.DATASETS.items() if cov.name in s.covariates]
            raise ValueError(f"{ae.name} needs the covariate {cov.name!r} ({cov.kind}: {cov.doc}), which "
                             f"{dataset.name} lacks; use data that provide it ({', '.join(have)}, or a .npz file "
                             f"with an array {cov.name!r})")
        if kind is not None and kind != cov.kind:
            raise ValueError(f"{ae.name} takes the covariate {cov.name!r} as {cov.kind}, but {dataset.name} gives "
                             f"it as {kind}")
    return dataset.arrays(split, ae.covariate_names)


def _refuse_local_latents(ae: Autoencoder, train: tuple) -> None:
    local = local_latents(ae, *to_device(train, next(ae.parameters()).device))
    if local:
        raise ValueError(f"{ae.name} has local latents {local}: MCMC would sample them for every training point. "
                         "Use an MCMC engine from Python on a handful of points of a trained model (tutorial 04), "
                         "or a model whose latents are all global (bayesian_ae)")


def _sample(ae, engine: McmcEngine, train: tuple, transform, out: Path):
    """Run an MCMC engine on the training data; write ``posterior_samples.pt`` and ``checkpoint.pt``."""
    train = to_device(train, next(ae.parameters()).device)
    result = engine.fit(ae, *train, transform=transform, checkpoint=out / "mcmc_checkpoint.pt")
    atomic_torch_save({"samples": result.samples, "stats": result.stats}, out / SAMPLES_FILE)
    atomic_torch_save({"model": ae.state_dict(), "train_seconds": result.stats["train_seconds"].sum().item()},
                      out / CHECKPOINT_FILE)
    return result


_MAY_CHANGE = {"engine.config.epochs", "engine.config.num_chains", "eval.num_particles"}


def _claim(out: Path, config: dict[str, Any], engine: Any = None) -> None:
    """Create ``out``, or accept it when it holds the same run (then fitting resumes).

    Only ``engine.epochs`` (a finished run trains on to the new number), ``num_chains`` and the
    evaluation particles may differ; fewer epochs than the checkpoint holds are refused here,
    before anything is written.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder (new, or a run folder to resume)")

    path = out / CONFIG_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        old, new = flat_config({k: saved.get(k) for k in config}), flat_config(json.loads(json.dumps(config)))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in _MAY_CHANGE)
        if changed:
            raise ValueError(f"{out} holds a different run (it differs in {', '.join(changed)}); "
                             "choose another --out or delete the folder")
        checkpoint = out / CHECKPOINT_FILE
        if hasattr(engine, "epochs") and checkpoint.exists():
            done = len(load_checkpoint(checkpoint).get("losses", ()))
            if done > engine.epochs:
                raise ValueError(f"{out} already holds {done} epochs, more than --epochs {engine.epochs}; pass "
                                 f"--epochs {done} or more to resume, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)


EVAL_MODES = ("full", "quick", "none")
QUICK = {"num_particles": 500, "test_points": 500}


def evaluate(
    run_dir: str | Path,
    num_particles: int | None = None,
    device: str = "cpu",
    dataset: datasets.Dataset | None = None,
    mode: str = "full",
) -> dict[str, Any]:
    """Evaluate a fitted run on its test split with the diagnostics suite.

    Writes ``metrics.json`` (headline numbers, with ``kind`` saying which evaluation ran),
    ``diagnostics.json`` (everything computed, see :func:`aezoo.diagnostics.suite.run`),
    ``posterior.nc`` (ArviZ), the figures and a self-contained ``report.html``. The model's
    covariates come from the test split, so a conditional model reports log p(x | covariates).

    The run's own evaluation (its ``eval.num_particles``, the whole test split) is written to the
    folder itself; any other (``mode="quick"``: K = 500 on at most the first 500 test points, or another
    ``num_particles``) to a subfolder ``eval-K{K}-n{N}``, so a quick look never overwrites the full
    figures. A folder whose ``metrics.json`` was computed from the current checkpoint is reused, not
    recomputed (its metrics say ``reused: true``).

    Args:
        run_dir: a run folder written by :func:`fit`.
        num_particles: ``K`` for importance sampling; default the run's ``eval.num_particles``
            (``mode="quick"``: at most 500).
        device: where to evaluate.
        dataset: the run's dataset if already loaded.
        mode: ``"full"`` or ``"quick"`` (see above).

    Returns:
        The metrics: ``kind`` (:data:`aezoo.evaluations.KINDS`), ``test_log_likelihood`` (mean IS
        estimate, nats per datum), its standard error over test data and its Monte Carlo error,
        ``test_elbo``, ``num_particles``, ``epochs``, ``train_seconds``, active units, share of
        Pareto k-hat above 0.7, ... (see :mod:`aezoo.evaluations` for each kind).

    Raises:
        FileNotFoundError: not a run folder. ValueError: a corrupt ``config.json``.
    """
    run_dir = Path(run_dir)
    check_device(device)
    if mode not in EVAL_MODES[:2]:
        raise ValueError(f"unknown evaluation mode {mode!r}; choose full or quick")
    config = evaluations.read_config(run_dir)
    K = config["eval"]["num_particles"] if num_particles is None else num_particles
    if mode == "quick":
        K = min(K, QUICK["num_particles"])
    integer("--num-particles", K)
    with locked(run_dir):
        return _evaluate(run_dir, config, K, device, dataset, QUICK["test_points"] if mode == "quick" else None)


def _evaluate(run_dir: Path, config: dict[str, Any], K: int, device: str,
              dataset: datasets.Dataset | None, max_points: int | None) -> dict[str, Any]:
    spec = config["data"]
    ae = load(run_dir, device)
    if dataset is None:
        dataset = load_data(spec["name"], spec["binarize"], spec["train_size"], spec["test_size"],
                            config["model"]["name"], ae.config, spec.get("labels"))
    if max_points is not None and len(dataset.test) > max_points:
        dataset = dataclasses.replace(
            dataset, test=dataset.test[:max_points],
            test_covariates={k: v[:max_points] for k, v in dataset.test_covariates.items()},
            test_truth=None if dataset.test_truth is None else dataset.test_truth[:max_points])
    own = K == config["eval"]["num_particles"] and max_points is None
    out = run_dir if own else run_dir / f"eval-K{K}-n{len(dataset.test)}"
    checkpoint = _fingerprint(run_dir)
    previous = out / "metrics.json"
    if previous.exists():
        metrics = json.loads(previous.read_text())
        if metrics.get("checkpoint_sha256") == checkpoint:
            return {**metrics, "reused": True, "eval_dir": str(out)}
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    pyro.set_rng_seed(config["seed"])
    test = covariates_of(ae, dataset, "test")
    metrics = evaluations.evaluate(run_dir, ae, dataset, test, {**config, "checkpoint_sha256": checkpoint}, state, K,
                                   out)
    return {**metrics, "reused": False, "eval_dir": str(out)}


def _fingerprint(run_dir: Path) -> str:
    """sha256 of the files the evaluation reads: the checkpoint and, for MCMC runs, the draws."""
    digest = hashlib.sha256()
    for name in (CHECKPOINT_FILE, SAMPLES_FILE):
        if (run_dir / name).exists():
            digest.update((run_dir / name).read_bytes())
    return digest.hexdigest()
