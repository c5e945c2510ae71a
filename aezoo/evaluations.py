"""How :func:`aezoo.runs.evaluate` writes a run's results, and its variants for runs the suite does not cover.

The diagnostics suite (:mod:`aezoo.diagnostics.suite`) needs data ``(N, D_x)`` and latents inside
the ``"data"`` plate. The variants here cover MCMC runs (convergence summary, trace and rank plots,
posterior prediction), sequence data with a mask (log p of the observed entries, imputation error)
and models with global latents or covariates (the test ELBO).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from aezoo import data as datasets
from aezoo import plots, report
from aezoo.core import load_checkpoint
from aezoo.diagnostics import likelihood, reconstruct, suite
from aezoo.diagnostics._traces import evaluating
from aezoo.inference import ENGINES
from aezoo.inference.importance import guide_sites
from aezoo.models import MODELS
from aezoo.sequence import impute

SAMPLES_FILE = "posterior_samples.pt"


def write(run_dir: Path, metrics: dict[str, Any], diag: dict[str, Any], config: dict[str, Any],
          losses: torch.Tensor | None = None) -> dict[str, Any]:
    """Write ``metrics.json``, ``diagnostics.json`` (non-finite numbers as null), the loss curve and the report."""
    (run_dir / "metrics.json").write_text(json.dumps(finite(metrics), indent=2) + "\n")
    (run_dir / "diagnostics.json").write_text(json.dumps(finite(diag), indent=1) + "\n")
    if losses is not None and len(losses):
        plots.loss_curve(losses, run_dir / "loss.png", f"{config['engine']['name']} loss")
    report.write(run_dir, metrics, diag, config)
    return metrics


def mcmc(run_dir: Path, ae, dataset: datasets.Dataset, config: dict[str, Any], state: dict[str, Any],
                   start: float) -> dict[str, Any]:
    """:func:`aezoo.runs.evaluate` for an MCMC run: convergence summary, trace/rank plots, posterior prediction."""
    posterior = load_checkpoint(run_dir / SAMPLES_FILE)
    predict = getattr(MODELS[config["model"]["name"]], "predict", None)
    diag = suite.run_mcmc(ae, posterior["samples"], posterior["stats"], dataset.test, run_dir, predict)
    mcmc, prediction = diag["mcmc"], diag.get("prediction", {})
    metrics: dict[str, Any] = {
        "model": config["model"]["name"], "engine": config["engine"]["name"], "data": config["data"]["name"],
        "binarize": config["data"]["binarize"], "num_test": prediction.get("num_data"),
        "test_log_predictive": prediction.get("log_predictive"),
        "test_log_predictive_se": prediction.get("log_predictive_se"),
        "test_squared_error": prediction.get("squared_error"),
        "r_hat_max": mcmc["r_hat_max"], "ess_bulk_min": mcmc["ess_bulk_min"], "ess_tail_min": mcmc["ess_tail_min"],
        "divergences": mcmc.get("divergences"), "num_chains": mcmc["num_chains"], "num_draws": mcmc["num_draws"],
        "train_seconds": state.get("train_seconds"), "eval_seconds": time.perf_counter() - start,
    }
    if predict is not None:
        shown = dataset.test[:10].to(next(ae.parameters()).device)
        plots.image_grid([("data", shown), ("reconstruction", predict(ae, posterior["samples"], shown)[0])],
                         run_dir / "reconstructions.png", dataset.image_shape,
                         "test data and posterior predictive means")
    return write(run_dir, metrics, diag, config)


def has_global_latents(ae, dataset: datasets.Dataset) -> bool:
    """True when a guide site lies outside the ``"data"`` plate (e.g. Bayesian weights, inducing values)."""
    with evaluating(ae) as device:
        sites = guide_sites(ae, *(d[:2].to(device) for d in (dataset.test, *dataset.test_covariates)))
    return any(not any(f.name == "data" for f in s["cond_indep_stack"]) for s in sites.values())


def elbo(run_dir: Path, ae, dataset: datasets.Dataset, config: dict[str, Any], state: dict[str, Any],
                   start: float) -> dict[str, Any]:
    """:func:`aezoo.runs.evaluate` for models with global latents or covariates: the test ELBO and reconstructions.

    Per-datum importance sampling needs every latent inside the ``"data"`` plate (a global latent
    couples the data), so the suite is not run; the test ELBO counts the global latents' KL once
    over the test set (``num_data`` = its size).
    """
    data = (dataset.test, *dataset.test_covariates)
    elbo = ENGINES["svi"](progress=False)
    with evaluating(ae) as device:
        data = tuple(d.to(device) for d in data)
        with torch.no_grad():
            loss = torch.stack([elbo.loss(ae, *data, num_data=len(data[0])) for _ in range(10)]).mean().item()
        shown = reconstruct(ae, *(d[:10] for d in data))
    losses = state.get("losses", torch.zeros(0))
    metrics: dict[str, Any] = {
        "model": config["model"]["name"], "engine": config["engine"]["name"], "data": config["data"]["name"],
        "num_test": len(data[0]), "test_elbo": -loss, "epochs": len(losses),
        "final_train_loss": losses[-1].item() if len(losses) else None, "train_seconds": state.get("train_seconds"),
        "eval_seconds": time.perf_counter() - start,
    }
    diag = {"note": "global latents or covariates: the test ELBO (mean of 10 estimates, nats per datum) and "
                    "reconstructions; per-datum importance sampling does not apply"}
    plots.image_grid([("data", dataset.test[:10]), ("reconstruction", shown.cpu())], run_dir / "reconstructions.png",
                     dataset.image_shape, "test data and reconstructions (decoder mean at z ~ q(z | x))")
    return write(run_dir, metrics, diag, config, losses)


def sequences(run_dir: Path, ae, dataset: datasets.Dataset, config: dict[str, Any], state: dict[str, Any],
                        start: float, num_particles: int) -> dict[str, Any]:
    """:func:`aezoo.runs.evaluate` for sequence data with a mask: log p(observed x), ELBO, imputation error, a figure.

    The image and latent diagnostics of the suite assume ``(B, D_x)`` data and are not computed.
    """
    x, covariates = dataset.test, dataset.test_covariates
    est = likelihood.importance_estimate(ae, x, *covariates, num_particles=num_particles).to_dict()
    losses = state.get("losses", torch.zeros(0))
    metrics: dict[str, Any] = {
        "model": config["model"]["name"], "engine": config["engine"]["name"], "data": config["data"]["name"],
        "num_test": est["num_data"], "num_particles": num_particles,
        "test_log_likelihood": est["log_likelihood"], "test_log_likelihood_se": est["log_likelihood_se"],
        "test_log_likelihood_mcse": est["log_likelihood_mcse"], "test_elbo": est["elbo"],
        "observed_entries_per_sequence": covariates[0].sum().item() / len(x),
        "epochs": len(losses), "final_train_loss": losses[-1].item() if len(losses) else None,
        "train_seconds": state.get("train_seconds"),
    }
    diag: dict[str, Any] = {"log_likelihood": est, "note": "sequence data: log p(x) of the observed entries, nats "
                                                            "per sequence; image and latent diagnostics not computed"}
    if hasattr(ae.guide, "posterior") and dataset.test_truth is not None:
        mask, truth = covariates[0], dataset.test_truth
        with evaluating(ae) as device:
            filled = impute(ae, x.to(device), mask.to(device)).cpu()
        missing = ~mask
        metrics["imputation_mse"] = (filled - truth)[missing].pow(2).mean().item()
        metrics["mean_imputation_mse"] = (x[mask].mean() - truth[missing]).pow(2).mean().item()
        if dataset.image_shape is not None:
            plots.image_grid([("observed", x[0].where(mask[0], torch.zeros(()))), ("truth", truth[0]),
                              ("imputed", filled[0])], run_dir / "reconstructions.png", dataset.image_shape,
                             "one test sequence: observed entries (missing as 0), the truth, the imputation")
    metrics["eval_seconds"] = time.perf_counter() - start
    return write(run_dir, metrics, diag, config, losses)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
