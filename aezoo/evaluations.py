"""How :func:`aezoo.runs.evaluate` evaluates a run and writes its results, one variant per kind of run.

:func:`evaluate` picks the variant from what the run is, never from metric names, and records it
as ``metrics["kind"]`` (one of :data:`KINDS`); :func:`header` writes the keys every variant shares.

- ``importance``: the diagnostics suite (:mod:`aezoo.diagnostics.suite`) on ``(x, *covariates)``
  with every latent inside the ``"data"`` plate: importance-sampled log p(x | covariates), bounds,
  latents, k-hat, predictive checks;
- ``reconstruction``: the same suite for a point-mass (Delta) guide, which has no log p(x);
- ``elbo``: models with global latents (a global latent couples the data): the test ELBO;
- ``sequence``: sequence data ``(N, T, D_x)``: log p of the observed entries, imputation error;
- ``graph``: a graph data set (``aezoo.data.graphs``): link prediction on the test pairs, ROC AUC and
  average precision beside the Adamic-Adar and spectral baselines (:mod:`aezoo.diagnostics.links`);
- ``mcmc``: posterior draws (an MCMC engine): convergence summary, trace/rank plots, prediction.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from pyro import poutine

from aezoo import data as datasets
from aezoo import plots, report
from aezoo.core import CONFIG_FILE, Data, atomic_write_text, load_checkpoint, rows, to_device
from aezoo.diagnostics import disentanglement, generate, likelihood, links, multimodal, reconstruct, suite
from aezoo.diagnostics._traces import evaluating
from aezoo.inference import ENGINES
from aezoo.models import MODELS
from aezoo.sequence import impute
from aezoo.traces import guide_sites

SAMPLES_FILE = "posterior_samples.pt"
MULTIMODAL_LIMITS = (1000, 1000)  # at most this many test data and particles for the multimodal measures
DISENTANGLEMENT_POINTS = 2000  # at most this many test data for the disentanglement metrics
KINDS = ("importance", "reconstruction", "elbo", "sequence", "graph", "mcmc")


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``config.json``.

    Raises:
        FileNotFoundError: no ``config.json``. ValueError: it is not valid JSON, or lacks a key a run
            folder has (says what to do).
    """
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt ({err}); delete the run folder and fit again") from err
    missing = [f"{k}.{f}" if f else k for k, fields in CONFIG_KEYS.items() for f in (fields or (None,))
               if not isinstance(config, dict) or not isinstance(config.get(k), dict if fields else object)
               or (f and f not in config[k])]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: it was not written by aezoo fit or was edited; "
                         "delete the run folder and fit again")
    return config


CONFIG_KEYS = {"model": ("name", "config"), "engine": ("name", "config"), "seed": None,
               "data": ("name", "binarize", "train_size", "test_size"), "eval": ("num_particles",)}


def header(kind: str, config: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The metrics every kind of run reports first: what ran, on what, for how long."""
    losses = state.get("losses", torch.zeros(0))
    return {"kind": kind, "model": config["model"]["name"], "engine": config["engine"]["name"],
            "data": config["data"]["name"], "binarize": config["data"]["binarize"], "epochs": len(losses),
            "final_train_loss": losses[-1].item() if len(losses) else None,
            "train_seconds": state.get("train_seconds"), "checkpoint_sha256": config.get("checkpoint_sha256")}


def evaluate(run_dir: Path, ae, dataset: datasets.Dataset, test: Data, config: dict[str, Any],
             state: dict[str, Any], num_particles: int, out_dir: Path | None = None) -> dict[str, Any]:
    """Run the variant that fits the run (module docstring) and write its results to ``out_dir`` (default
    ``run_dir``, which holds the run's draws)."""
    start, out = time.perf_counter(), out_dir or run_dir
    out.mkdir(exist_ok=True)
    if (run_dir / SAMPLES_FILE).exists():
        return mcmc(out, ae, dataset, test, config, state, start, run_dir / SAMPLES_FILE)
    if dataset.layout == "graphs":
        return graphs(out, ae, test, config, state, start)
    if dataset.layout == "sequences":
        return sequences(out, ae, dataset, test, config, state, start, num_particles)
    if has_global_latents(ae, test):
        return elbo(out, ae, dataset, test, config, state, start)
    return importance(out, ae, dataset, test, config, state, start, num_particles)


def write(run_dir: Path, metrics: dict[str, Any], diag: dict[str, Any], config: dict[str, Any],
          state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``metrics.json``, ``diagnostics.json`` (non-finite numbers as null), the loss curve (training, and
    validation where the checkpoint ``state`` has it) and the report."""
    atomic_write_text(run_dir / "diagnostics.json", json.dumps(finite(diag), indent=1) + "\n")
    losses = (state or {}).get("losses")
    if losses is not None and len(losses):
        plots.loss_curve(losses, run_dir / "loss.png", f"{config['engine']['name']} loss", state.get("val_losses"))
    report.write(run_dir, metrics, diag, config)
    atomic_write_text(run_dir / "metrics.json", json.dumps(finite(metrics), indent=2) + "\n")  # last: a run is
    return metrics  # evaluated when its metrics.json exists


def importance(run_dir: Path, ae, dataset: datasets.Dataset, test: Data, config: dict[str, Any],
               state: dict[str, Any], start: float, num_particles: int) -> dict[str, Any]:
    """The suite on the test data and covariates: log p(x | covariates) by importance sampling, and the rest."""
    diag = suite.run(ae, test, run_dir, suite.Config(num_particles=num_particles), dataset.test_labels,
                     dataset.image_shape)
    ll = diag["log_likelihood"]
    metrics: dict[str, Any] = {
        **header(diag["kind"], config, state),
        **scored_covariates(ae, test),
        "num_test": ll["num_data"], "num_particles": num_particles,
        "test_log_likelihood": ll["log_likelihood"], "test_log_likelihood_se": ll["log_likelihood_se"],
        "test_log_likelihood_mcse": ll["log_likelihood_mcse"], "test_elbo": ll["elbo"],
        "test_log_likelihood_lower_95": ll.get("log_likelihood_lower_95"),
        "inference_gap": ll["inference_gap"], "active_units": diag["latent"]["active_units"],
        "num_units": diag["latent"].get("num_units"),
        "khat_share_above_0.7": diag["guide_quality"]["share_above"],
        # the delta-method MCSE means something only where the weights' tails are light (k-hat <= 0.7)
        "test_log_likelihood_mcse_reliable": diag["guide_quality"]["share_above"] == 0,
    }
    if diag["kind"] == "reconstruction":  # a deterministic guide: no log p(x) estimate, the reconstruction instead
        metrics.update(note=diag["note"], test_reconstruction=ll["reconstruction"],
                       dead_units=diag["latent"]["dead_units"])
    module = MODELS[config["model"]["name"]]
    bound = getattr(module, "bound", None)  # a point mass on a discrete code (vq_vae): its ELBO bounds log p(x)
    if bound is not None:
        with evaluating(ae) as device:
            metrics["test_log_likelihood_bound"] = bound(ae, test[0].to(device)).mean().item()
            usage = module.codebook_usage(ae, test[0].to(device))
        metrics.update({f"codebook_{k}": v for k, v in usage.items() if k in ("perplexity", "dead_codes")})
    classify = getattr(MODELS[config["model"]["name"]], "classify", None)
    if classify is not None and dataset.test_labels is not None:  # a model with a classifier (m2)
        with evaluating(ae) as device:
            predicted = classify(ae, test[0].to(device)).cpu()
        metrics["test_accuracy"] = (predicted == dataset.test_labels).double().mean().item()
    if getattr(MODELS[config["model"]["name"]], "MODALITIES", None) == multimodal.MODALITIES \
            and dataset.name == "mnist_views":  # the digit classifier judges these images
        metrics.update(multimodal_metrics(ae, test, num_particles))
    if "factor" in dataset.kinds.values():  # known generative factors (sprites): MIG, SAP, DCI, FactorVAE, InfoMEC
        metrics.update(disentanglement_metrics(ae, dataset, test, diag))
    exact = getattr(ae.model, "exact_log_marginal", None)
    device = next(ae.parameters()).device
    if exact is not None:
        with torch.no_grad():
            metrics["exact_test_log_likelihood"] = exact(*to_device(test, device)).mean().item()
    shown = to_device(rows(test, slice(0, 10)), device)
    plots.image_grid([("data", shown[0]), ("reconstruction", reconstruct(ae, *shown))], run_dir / "reconstructions.png",
                     dataset.image_shape, "test data and reconstructions (decoder mean at z ~ q(z | x))")
    plots.samples_grid(generate(ae, *to_device(rows(test, slice(0, 64)), device)), run_dir / "samples.png",
                       dataset.image_shape, "decoder mean at z ~ p(z" + (" | covariates)" if ae.covariates else ")"))
    metrics["eval_seconds"] = time.perf_counter() - start
    return write(run_dir, metrics, diag, config, state)


def multimodal_metrics(ae, test: Data, num_particles: int) -> dict[str, Any]:
    """Subset and conditional log-likelihoods, coherence and diversity (:mod:`aezoo.diagnostics.multimodal`) on
    the first test data, within :data:`MULTIMODAL_LIMITS`; flat keys such as ``coherence[y->x]``."""
    n, k = min(len(test[0]), MULTIMODAL_LIMITS[0]), min(num_particles, MULTIMODAL_LIMITS[1])
    found = multimodal.evaluate(ae, *rows(test, slice(0, n))[:3], num_particles=k).to_dict()
    flat = {f"{group}[{key}]": value for group in ("log_likelihood", "conditional", "coherence", "diversity")
            for key, value in found[group].items()}
    return {**flat, "multimodal_num_test": n, "multimodal_num_particles": k,
            "judge_accuracy": found["classifier_accuracy"]}


def disentanglement_metrics(ae, dataset: datasets.Dataset, test: Data, diag: dict[str, Any]) -> dict[str, Any]:
    """The disentanglement metrics (:mod:`aezoo.diagnostics.disentanglement`) of the guide's mean codes of the first
    :data:`DISENTANGLEMENT_POINTS` test data against the data's factors; the details go to ``diag["disentanglement"]``
    and the flat scores (``mig``, ``sap``, ``dci_disentanglement``, ...) are returned."""
    name = next(k for k, kind in dataset.kinds.items() if kind == "factor")
    found = disentanglement.evaluate(ae, test, dataset.test_covariates[name], dataset.factor_names,
                                     DISENTANGLEMENT_POINTS)
    diag["disentanglement"] = found.to_dict()
    return {**found.metrics, "disentanglement_num_test": found.num_data}


def scored_covariates(ae, test: Data) -> dict[str, list[str]]:
    """The given covariates split by role: ``covariates`` conditioned on (log p(x | c)) and
    ``observed_covariates`` scored with ``x`` as observed sites of the model (log p(x, y), as M2's labels)."""
    given = [n for n, d in zip(ae.covariate_names, test[1:]) if d is not None]
    with evaluating(ae) as device:
        tr = poutine.trace(ae.model).get_trace(*to_device(rows(test, slice(0, 2)), device))
    observed = [n for n in given if n in tr.nodes and tr.nodes[n]["type"] == "sample" and tr.nodes[n]["is_observed"]]
    return {"covariates": [n for n in given if n not in observed], "observed_covariates": observed}


def mcmc(run_dir: Path, ae, dataset: datasets.Dataset, test: Data, config: dict[str, Any], state: dict[str, Any],
         start: float, samples: Path) -> dict[str, Any]:
    """Convergence summary, trace/rank plots and posterior prediction of an MCMC run (draws in ``samples``)."""
    posterior = load_checkpoint(samples)
    predict = getattr(MODELS[config["model"]["name"]], "predict", None)
    diag = suite.run_mcmc(ae, posterior["samples"], posterior["stats"], test, run_dir, predict)
    summary, prediction = diag["mcmc"], diag.get("prediction", {})
    metrics: dict[str, Any] = {
        **header("mcmc", config, state), "num_test": prediction.get("num_data"),
        "test_log_predictive": prediction.get("log_predictive"),
        "test_log_predictive_se": prediction.get("log_predictive_se"),
        "test_squared_error": prediction.get("squared_error"),
        "r_hat_max": summary["r_hat_max"], "ess_bulk_min": summary["ess_bulk_min"],
        "ess_tail_min": summary["ess_tail_min"], "divergences": summary.get("divergences"),
        "num_chains": summary["num_chains"], "num_draws": summary["num_draws"],
    }
    if predict is not None:
        shown = to_device(rows(test, slice(0, 10)), next(ae.parameters()).device)
        mean = predict(ae, posterior["samples"], shown[0], covariates=shown[1:])[0]
        plots.image_grid([("data", shown[0]), ("reconstruction", mean)],
                         run_dir / "reconstructions.png", dataset.image_shape,
                         "test data and posterior predictive means")
    metrics["eval_seconds"] = time.perf_counter() - start
    return write(run_dir, metrics, diag, config)


def has_global_latents(ae, data: Data) -> bool:
    """True when a guide site lies outside the ``"data"`` plate (e.g. Bayesian weights, inducing values)."""
    with evaluating(ae) as device:
        sites = guide_sites(ae, *to_device(rows(data, slice(0, 2)), device))
    return any(not any(f.name == "data" for f in s["cond_indep_stack"]) for s in sites.values())


def elbo(run_dir: Path, ae, dataset: datasets.Dataset, test: Data, config: dict[str, Any], state: dict[str, Any],
         start: float) -> dict[str, Any]:
    """The test ELBO and reconstructions of a model with global latents.

    Per-datum importance sampling needs every latent inside the ``"data"`` plate (a global latent
    couples the data), so the suite is not run; the test ELBO counts the global latents' KL once
    over the test set (``num_data`` = its size).
    """
    bound = ENGINES["svi"](progress=False)
    with evaluating(ae) as device:
        data = to_device(test, device)
        with torch.no_grad():
            loss = torch.stack([bound.loss(ae, *data, num_data=len(data[0])) for _ in range(10)]).mean().item()
        shown = reconstruct(ae, *rows(data, slice(0, 10)))
    metrics: dict[str, Any] = {**header("elbo", config, state), "num_test": len(data[0]), "test_elbo": -loss,
                               "eval_seconds": time.perf_counter() - start}
    diag = {"note": "global latents: the test ELBO (mean of 10 estimates, nats per datum) and reconstructions; "
                    "per-datum importance sampling does not apply"}
    plots.image_grid([("data", test[0][:10]), ("reconstruction", shown.cpu())], run_dir / "reconstructions.png",
                     dataset.image_shape, "test data and reconstructions (decoder mean at z ~ q(z | x))")
    return write(run_dir, metrics, diag, config, state)


def sequences(run_dir: Path, ae, dataset: datasets.Dataset, test: Data, config: dict[str, Any],
              state: dict[str, Any], start: float, num_particles: int) -> dict[str, Any]:
    """log p(observed x), ELBO, imputation error and a figure for sequence data with a mask.

    The image and latent diagnostics of the suite assume ``(B, D_x)`` data and are not computed.
    """
    x, mask = test[0], dataset.test_covariates.get("mask")
    estimate = likelihood.importance_estimate(ae, *test, num_particles=num_particles)
    suite.save_per_datum(run_dir, estimate.log_likelihood)
    est = estimate.to_dict()
    metrics: dict[str, Any] = {
        **header("sequence", config, state), "num_test": est["num_data"], "num_particles": num_particles,
        "test_log_likelihood": est["log_likelihood"], "test_log_likelihood_se": est["log_likelihood_se"],
        "test_log_likelihood_mcse": est["log_likelihood_mcse"], "test_elbo": est["elbo"],
        "test_log_likelihood_lower_95": est["log_likelihood_lower_95"],
        "observed_entries_per_sequence": (x.numel() if mask is None else mask.sum().item()) / len(x),
    }
    diag: dict[str, Any] = {"log_likelihood": est, "note": "sequence data: log p(x) of the observed entries, nats "
                                                            "per sequence; image and latent diagnostics not computed"}
    if hasattr(ae.guide, "posterior") and dataset.test_truth is not None and mask is not None:
        truth = dataset.test_truth
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
    return write(run_dir, metrics, diag, config, state)


def graphs(run_dir: Path, ae, test: Data, config: dict[str, Any], state: dict[str, Any],
           start: float) -> dict[str, Any]:
    """Link prediction on the test pairs of a graph data set, the model beside the two baselines.

    The model does not condition on the training edges (only its guide reads them), so an importance-sampled
    log-likelihood of the test pairs would be their marginal log p, not log p(test pairs | training graph):
    it is not reported.
    """
    scores = links.link_prediction(ae, test)
    metrics: dict[str, Any] = {**header("graph", config, state), "num_test_pairs": scores["model"]["num_pairs"],
                               "test_link_auc": scores["model"]["auc"], "test_link_ap": scores["model"]["ap"],
                               **{f"{name}_{k}": scores[name][k] for name in ("adamic_adar", "spectral")
                                  for k in ("auc", "ap")},
                               "eval_seconds": time.perf_counter() - start}
    diag = {"links": scores, "note": "graph data: link prediction on the held-out test pairs (test edges and as "
                                     "many non-edges) from the training graph; ROC AUC and average precision"}
    return write(run_dir, metrics, diag, config, state)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
