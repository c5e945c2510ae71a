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

import dataclasses
import importlib.metadata
import json
import platform
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from aezoo import data as datasets
from aezoo import evaluations, plots
from aezoo.core import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    atomic_torch_save,
    config_from_dict,
    config_to_dict,
    config_with,
    load,
    load_checkpoint,
)
from aezoo.diagnostics import generate, reconstruct, suite
from aezoo.evaluations import SAMPLES_FILE
from aezoo.inference import ENGINES
from aezoo.inference.mcmc import McmcEngine, latent_sites
from aezoo.models import MODELS


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
    progress: bool = True,
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
        num_particles: ``K`` for the test log-likelihood.
        engine_fields: engine fields set directly (``epochs``, ``batch_size``, ``lr``); None is ignored.

    Returns:
        The run folder.

    Raises:
        ValueError: unknown names or settings, or a folder holding a different run.
    """
    _choose("model", model, MODELS)
    defaults: dict[str, Any] = {}
    if engine is None:
        engine, defaults = getattr(MODELS[model], "DEFAULT_ENGINE", ("svi", {}))
    _choose("engine", engine, ENGINES)
    _choose("dataset", data, datasets.DATASETS)
    model_sets, engine_sets = _split_settings(settings or {})
    model_cfg = config_with(MODELS[model].Config(), model_sets, "model.")
    dataset = datasets.load(data, binarize, train_size, test_size, model=model, model_config=model_cfg)
    if "x_dim" not in model_sets and hasattr(model_cfg, "x_dim"):  # the data decide D_x unless set
        model_cfg = dataclasses.replace(model_cfg, x_dim=dataset.train.shape[-1])
    fields = {k: v for k, v in engine_fields.items() if v is not None}
    known = {f.name for f in dataclasses.fields(ENGINES[engine])}
    if set(fields) - known:
        raise ValueError(f"the {engine} engine has no {', '.join(sorted(set(fields) - known))} setting; "
                         f"its settings: {', '.join(sorted(known))}")
    engine_obj = dataclasses.replace(ENGINES[engine](), **{**defaults, "seed": seed, "progress": progress, **fields})
    engine_obj = config_with(engine_obj, engine_sets, "engine.")
    out = Path(out or f"runs/{model}-{engine}-{data}-seed{seed}")
    config = {
        "model": {"name": model, "config": config_to_dict(model_cfg)},
        "engine": {"name": engine, "config": {k: v for k, v in config_to_dict(engine_obj).items() if k != "progress"}},
        "data": {"name": data, "binarize": binarize, "train_size": train_size, "test_size": test_size},
        "seed": seed,
        "eval": {"num_particles": num_particles},
    }
    _claim(out, config)
    (out / CONFIG_FILE).write_text(json.dumps({**config, "device": device, "versions": versions()}, indent=2) + "\n")

    pyro.set_rng_seed(seed)
    ae = MODELS[model].build(model_cfg).to(device)
    if isinstance(engine_obj, McmcEngine):
        result = _sample(ae, engine_obj, dataset, out)
    else:
        result = engine_obj.fit(ae, dataset.train, *dataset.train_covariates, transform=dataset.transform,
                                checkpoint=out / CHECKPOINT_FILE)
    with open(out / "losses.csv", "w") as f:
        f.write("epoch,loss_nats_per_datum\n")
        f.writelines(f"{i + 1},{v:.6f}\n" for i, v in enumerate(result.losses.tolist()))
    evaluate(out, device=device, dataset=dataset)
    return out


def _sample(ae, engine: McmcEngine, dataset: datasets.Dataset, out: Path):
    """Run an MCMC engine on the training data; write ``posterior_samples.pt`` and ``checkpoint.pt``."""
    device = next(ae.parameters()).device
    first = [d[:2].to(device) for d in (dataset.train, *dataset.train_covariates)]
    local = sorted(n for n, site in latent_sites(ae.model, *first).items()
                   if any(f.name == "data" for f in site["cond_indep_stack"]))
    if local:
        raise ValueError(f"{ae.name} has local latents {local}: MCMC would sample them for every training point. "
                         "Use an MCMC engine from Python on a handful of points of a trained model (tutorial 04), "
                         "or a model whose latents are all global (bayesian_ae)")
    result = engine.fit(ae, *(d.to(device) for d in (dataset.train, *dataset.train_covariates)),
                        transform=dataset.transform, checkpoint=out / "mcmc_checkpoint.pt")
    atomic_torch_save({"samples": result.samples, "stats": result.stats}, out / SAMPLES_FILE)
    atomic_torch_save({"model": ae.state_dict(), "train_seconds": result.stats["train_seconds"].sum().item()},
                      out / CHECKPOINT_FILE)
    return result


_MAY_CHANGE = {"engine.config.epochs", "engine.config.num_chains", "eval.num_particles"}


def _claim(out: Path, config: dict[str, Any]) -> None:
    """Create ``out``, or accept it when it holds the same run (then fitting resumes).

    Only ``engine.epochs`` (a finished run trains on to the new number) and the evaluation
    particles may differ.
    """

    def flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for k, v in cfg.items():
            items.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return items

    path = out / CONFIG_FILE
    if path.exists():
        old, new = flat({k: json.loads(path.read_text()).get(k) for k in config}), flat(json.loads(json.dumps(config)))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in _MAY_CHANGE)
        if changed:
            raise ValueError(f"{out} holds a different run (it differs in {', '.join(changed)}); "
                             "choose another --out or delete the folder")
    out.mkdir(parents=True, exist_ok=True)


def evaluate(
    run_dir: str | Path,
    num_particles: int | None = None,
    device: str = "cpu",
    dataset: datasets.Dataset | None = None,
) -> dict[str, Any]:
    """Evaluate a fitted run on its test split with the diagnostics suite.

    Writes ``metrics.json`` (headline numbers), ``diagnostics.json`` (everything the suite
    computes, see :func:`aezoo.diagnostics.suite.run`), ``posterior.nc`` (ArviZ), the figures and
    a self-contained ``report.html``.

    Args:
        run_dir: a run folder written by :func:`fit`.
        num_particles: ``K`` for importance sampling; default the run's ``eval.num_particles``.
        device: where to evaluate.
        dataset: the run's dataset if already loaded.

    Returns:
        The metrics: ``test_log_likelihood`` (mean IS estimate, nats per datum), its standard
        error over test data and its Monte Carlo error, ``test_elbo``, ``num_particles``,
        ``epochs``, ``train_seconds``, active units, share of Pareto k-hat above 0.7, ...
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    K = num_particles or config["eval"]["num_particles"]
    spec = config["data"]
    if dataset is None:
        model_cfg = config_from_dict(MODELS[config["model"]["name"]].Config, config["model"]["config"])
        dataset = datasets.load(spec["name"], spec["binarize"], spec["train_size"], spec["test_size"],
                                model=config["model"]["name"], model_config=model_cfg)
    ae = load(run_dir, device)
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    losses = state.get("losses", torch.zeros(0))
    pyro.set_rng_seed(config["seed"])
    start = time.perf_counter()
    if (run_dir / SAMPLES_FILE).exists():
        return evaluations.mcmc(run_dir, ae, dataset, config, state, start)
    covariates = dataset.test_covariates
    if covariates and covariates[0].dtype == torch.bool and covariates[0].shape == dataset.test.shape:
        return evaluations.sequences(run_dir, ae, dataset, config, state, start, K)
    if covariates or evaluations.has_global_latents(ae, dataset):
        return evaluations.elbo(run_dir, ae, dataset, config, state, start)
    diag = suite.run(ae, dataset.test, run_dir, suite.Config(num_particles=K), dataset.test_labels,
                     dataset.image_shape)
    ll = diag["log_likelihood"]
    metrics: dict[str, Any] = {
        "model": config["model"]["name"],
        "engine": config["engine"]["name"],
        "data": spec["name"],
        "binarize": spec["binarize"],
        "num_test": ll["num_data"],
        "num_particles": K,
        "test_log_likelihood": ll["log_likelihood"],
        "test_log_likelihood_se": ll["log_likelihood_se"],
        "test_log_likelihood_mcse": ll["log_likelihood_mcse"],
        "test_elbo": ll["elbo"],
        "inference_gap": ll["inference_gap"],
        "active_units": diag["latent"]["active_units"],
        "khat_share_above_0.7": diag["guide_quality"]["share_above"],
        "epochs": len(losses),
        "final_train_loss": losses[-1].item() if len(losses) else None,
        "train_seconds": state.get("train_seconds"),
        "eval_seconds": time.perf_counter() - start,
    }
    if "note" in diag:  # a deterministic guide: no log p(x) estimate, the reconstruction instead
        metrics.update(note=diag["note"], test_reconstruction=ll["reconstruction"])
    exact = getattr(ae.model, "exact_log_marginal", None)
    if exact is not None:
        with torch.no_grad():
            metrics["exact_test_log_likelihood"] = exact(dataset.test.to(device)).mean().item()
    shown = dataset.test[:10].to(device)
    plots.image_grid([("data", shown), ("reconstruction", reconstruct(ae, shown))], run_dir / "reconstructions.png",
                     dataset.image_shape, "test data and reconstructions (decoder mean at z ~ q(z | x))")
    plots.samples_grid(generate(ae, dataset.test[:64].to(device)), run_dir / "samples.png", dataset.image_shape,
                       "decoder mean at z ~ p(z)")
    return evaluations.write(run_dir, metrics, diag, config, losses)
