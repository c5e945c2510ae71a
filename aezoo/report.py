"""A single self-contained ``report.html`` per run: metrics, diagnostics, figures embedded, config."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

FIGURES = {
    "loss.png": "Training loss per epoch (negative bound, nats per datum).",
    "reconstructions.png": "Test data and their reconstructions.",
    "samples.png": "Decoder means at prior draws.",
    "bounds.png": "Average IWAE_k against k (k = 1 is the ELBO); the dashed line is the IS log p(x).",
    "kl_per_dimension.png": "Average KL(q(z_u | x) || p(z_u)) per latent unit; units under the line carry no "
                            "information.",
    "latent_space.png": "Guide means of test data in 2-D (PCA when D_z > 2), coloured by label.",
    "latent_traversal.png": "Decoded mean code with one of the most active units moved from -3 to 3.",
    "trace.png": "MCMC draws of the first coordinates of each site: per-chain densities and traces.",
    "rank.png": "Rank plots of the MCMC draws: near-uniform histograms when the chains mix (Vehtari et al., "
                "arXiv:1903.08008).",
    "khat.png": "Pareto k-hat of each datum's importance weights; above 0.7 the IS estimate is unreliable "
                "(Yao et al., arXiv:1802.02538).",
}


R_HAT_MAX, ESS_PER_CHAIN_MIN = 1.01, 100  # Vehtari et al., arXiv:1903.08008

# metric -> (label, unit, format); "%" formats a share as a percentage
LABELS: dict[str, tuple[str, str, str]] = {
    "test_log_likelihood": ("test log-likelihood (importance sampled)", "nats per datum", ".2f"),
    "test_log_likelihood_se": ("± standard error over test points", "nats", ".2f"),
    "test_log_likelihood_mcse": ("Monte Carlo error (delta method)", "nats", ".3f"),
    "test_log_likelihood_lower_95": ("95% lower confidence bound (any guide)", "nats per datum", ".2f"),
    "test_log_likelihood_mcse_reliable": ("Monte Carlo error reliable (every k-hat <= 0.7)", "", ""),
    "test_elbo": ("test ELBO", "nats per datum", ".2f"),
    "inference_gap": ("inference gap log p(x) - ELBO", "nats per datum", ".2f"),
    "test_reconstruction": ("test reconstruction log p(x | encoder(x))", "nats per datum", ".2f"),
    "test_accuracy": ("test accuracy", "", "%"),
    "mig": ("mutual information gap (MIG, 0-1)", "", ".3f"),
    "sap": ("separated attribute predictability (SAP, chance-adjusted)", "", ".3f"),
    "dci_disentanglement": ("DCI disentanglement", "", ".3f"),
    "dci_completeness": ("DCI completeness", "", ".3f"),
    "dci_informativeness": ("DCI informativeness (held-out R^2)", "", ".3f"),
    "factorvae_score": ("FactorVAE score (majority-vote accuracy)", "", ".3f"),
    "infomec_modularity": ("InfoM modularity", "", ".3f"),
    "infomec_compactness": ("InfoC compactness", "", ".3f"),
    "infomec_explicitness": ("InfoE explicitness", "", ".3f"),
    "disentanglement_num_test": ("test points of the disentanglement metrics", "", ""),
    "test_log_predictive": ("test posterior predictive log p(x | data)", "nats per datum", ".2f"),
    "test_squared_error": ("test squared error of the predictive mean", "", ".4g"),
    "active_units": ("active units per site", "", ""),
    "num_units": ("units per site", "", ""),
    "khat_share_above_0.7": ("test points with Pareto k-hat above 0.7", "", "%"),
    "num_particles": ("importance samples K", "", ""),
    "num_test": ("test points", "", ""),
    "epochs": ("epochs trained", "", ""),
    "final_train_loss": ("final training loss", "nats per datum", ".2f"),
    "train_seconds": ("training time", "s", ".1f"),
    "eval_seconds": ("evaluation time", "s", ".1f"),
    "r_hat_max": ("largest split R-hat", "", ".3f"),
    "ess_bulk_min": ("smallest bulk ESS", "draws", ".0f"),
    "ess_tail_min": ("smallest tail ESS", "draws", ".0f"),
    "imputation_mse": ("imputation squared error", "", ".4g"),
    "mean_imputation_mse": ("mean-imputation squared error (baseline)", "", ".4g"),
}
HIDDEN = ("checkpoint_sha256", "kind", "model", "engine", "data")
# (model, data, binarization) -> (published test log-likelihood, source): the README's results tables
REFERENCES: dict[tuple[str, str, str], tuple[float, str]] = {
    ("vae", "mnist", "dynamic"): (-86.76, "Burda et al. arXiv:1509.00519, VAE 1 layer, 3,280 epochs, k = 5000"),
    ("hvae", "mnist", "dynamic"): (-85.33, "Burda et al. arXiv:1509.00519, VAE 2 layers"),
    ("vae", "mnist", "static"): (-88.56, "Tomczak & Welling arXiv:1705.07120, standard prior"),
    ("vamp_vae", "mnist", "static"): (-85.57, "Tomczak & Welling arXiv:1705.07120, VampPrior"),
}


def metric_rows(metrics: dict[str, Any]) -> dict[str, str]:
    """Metrics as ``label (unit) -> value`` with sensible rounding, and the published reference where one exists."""
    rows = {}
    for key, value in metrics.items():
        if key in HIDDEN:
            continue
        label, unit, fmt = LABELS.get(key, (key, "", ".4g"))
        rows[f"{label} ({unit})" if unit else label] = _formatted(value, fmt)
    reference = REFERENCES.get((metrics.get("model"), metrics.get("data"), metrics.get("binarize")))
    if reference is not None and metrics.get("kind") == "importance":
        rows["published test log-likelihood (nats per datum)"] = f"{reference[0]:.2f} ({reference[1]})"
    return rows


def _formatted(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        return _fmt(value)
    if fmt == "%":
        return f"{100 * value:.1f}%"
    return format(value, fmt) if fmt and isinstance(value, float) else str(value)


def verdicts(metrics: dict[str, Any]) -> list[str]:
    """What a person should know about a run before reading its numbers; empty for a healthy run.

    Rules: a latent site with no active unit (posterior collapse); importance weights whose Pareto
    k-hat exceeds 0.7 somewhere (the Monte Carlo error is unreliable); MCMC with split R-hat above
    1.01, bulk ESS below 100 per chain or divergent transitions (Vehtari et al., arXiv:1903.08008);
    an imputation worse than filling in the mean.
    """
    out = []
    sizes = metrics.get("num_units") or {}
    for site, active in (metrics.get("active_units") or {}).items():
        if active == 0:
            out.append(f"posterior collapse: none of the {sizes.get(site, '?')} units of {site} is active (the "
                       "decoder ignores the code); lower beta, warm the KL up or use a smaller likelihood scale")
    lower = metrics.get("test_log_likelihood_lower_95")
    if metrics.get("test_log_likelihood_mcse_reliable") is False and lower is not None:
        out.append(f"guide quality: {100 * metrics['khat_share_above_0.7']:.0f}% of the checked test points have "
                   "Pareto k-hat above 0.7, so the log-likelihood's Monte Carlo error is unreliable; what holds "
                   f"is the 95% lower bound {lower:.2f} nats")
    r_hat, ess, chains = metrics.get("r_hat_max"), metrics.get("ess_bulk_min"), metrics.get("num_chains") or 1
    if r_hat is not None and r_hat > R_HAT_MAX:
        out.append(f"MCMC has not converged: split R-hat reaches {r_hat:.2f} (above {R_HAT_MAX}); run longer "
                   "warm-up and more draws, or reparameterise")
    if ess is not None and ess < ESS_PER_CHAIN_MIN * chains:
        out.append(f"too few effective draws: the smallest bulk ESS is {ess:.0f}, below {ESS_PER_CHAIN_MIN} per "
                   f"chain ({ESS_PER_CHAIN_MIN * chains})")
    if metrics.get("divergences"):
        out.append(f"{metrics['divergences']} divergent transitions: the sampler missed part of the posterior; "
                   "raise target_accept or reparameterise")
    mse, baseline = metrics.get("imputation_mse"), metrics.get("mean_imputation_mse")
    if mse is not None and baseline is not None and mse >= baseline:
        out.append(f"the imputation (squared error {mse:.4g}) is no better than filling in the mean ({baseline:.4g})")
    return out


def write(run_dir: str | Path, metrics: dict[str, Any], diagnostics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``run_dir/report.html`` and return its path; figures missing from the folder are skipped."""
    run_dir = Path(run_dir)
    title = f"aezoo run: {metrics['model']} / {metrics['engine']} / {metrics['data']}"
    if metrics["kind"] == "mcmc":
        sections = _mcmc_sections(diagnostics)
    elif metrics["kind"] in ("importance", "reconstruction"):  # the suite ran
        sections = _guide_sections(diagnostics)
    else:  # global latents or sequence data: the metrics and a note
        sections = [("Note", html.escape(diagnostics.get("note", "")), "")]
    intro = ("Draws of the posterior of the model's latent sites; the predictive log-likelihood averages p(x | draw) "
             "over draws." if metrics["kind"] == "mcmc" else
             "Log-likelihoods are in nats per datum; the test log-likelihood is the importance-sampled estimate with K "
             "samples (Burda et al., arXiv:1509.00519)." + _khat_warning(diagnostics))
    sections.insert(0, ("Metrics", intro, _text_table(metric_rows(metrics))))
    warnings = verdicts(metrics)
    box = ("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>") if warnings else \
        "<p>No warning: the code is in use, the importance weights are well behaved and the chains (if any) mixed.</p>"
    body = (f'<div class="verdict {"warn" if warnings else "ok"}"><h2>Verdict</h2>{box}</div>'
            + "".join(f"<h2>{name}</h2><p>{note}</p>{content}" for name, note, content in sections))
    figures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{_base64(run_dir / name)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in FIGURES.items()
        if (run_dir / name).exists()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}img{{max-width:100%}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}figure{{margin:1.5em 0}}
.verdict{{border:2px solid;padding:0 1em;border-radius:6px}}.warn{{border-color:#c60;background:#fff6ec}}
.ok{{border-color:#393;background:#f1fbf1}}</style></head><body>
<h1>{html.escape(title)}</h1>{body}
<h2>Figures</h2>{figures}
<h2>Settings</h2>{_text_table(_flat(config))}
</body></html>
"""
    path = run_dir / "report.html"
    tmp = path.with_name(".report.html.tmp")  # written whole, then renamed: never half a page
    tmp.write_text(page)
    tmp.replace(path)
    return path


def _guide_sections(diagnostics: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        ("Bounds against k", f"On the first {diagnostics['subsample']} test points.",
         _table({f"IWAE_{k}": f"{v['mean']:.3f} ± {v['mcse']:.3f}" for k, v in diagnostics["bounds"].items()})),
        ("ELBO decomposition", "", _table(diagnostics["elbo_decomposition"])),
        ("Latent diagnostics", "Active units: Var_x E_q[z_u | x] above the threshold; collapsed units are "
                               "inactive with KL below the threshold.", _table(_latent(diagnostics["latent"]))),
        ("Guide quality", "", _table({k: v for k, v in diagnostics["guide_quality"].items() if k != "khat"})),
        ("Posterior predictive checks", "p-value: share of replicated data sets whose statistic is at least the "
                                        "observed one; values near 0 or 1 flag misfit.",
         _table(_checks(diagnostics["predictive_checks"]))),
    ]


def _mcmc_sections(diagnostics: dict[str, Any]) -> list[tuple[str, str, str]]:
    mcmc = {k: v for k, v in diagnostics["mcmc"].items() if k != "sites"}
    sections = [("MCMC convergence", "Rank-normalised split R-hat (at most 1.01), bulk and tail ESS (at least 100 per "
                                     "chain) and divergences (Vehtari et al., arXiv:1903.08008); per site:",
                 _table(mcmc) + _table({f"{name}: {k}": v for name, site in diagnostics["mcmc"]["sites"].items()
                                        for k, v in site.items()}))]
    if "prediction" in diagnostics:
        sections.append(("Posterior predictive", f"On the first {diagnostics['subsample']} test points: log of the "
                                                  "average over draws of p(x | draw), squared error of the mean.",
                         _table(diagnostics["prediction"])))
    return sections


def _khat_warning(diagnostics: dict[str, Any]) -> str:
    share = diagnostics.get("guide_quality", {}).get("share_above")
    if not share:
        return ""
    return (f" <strong>Caution:</strong> {100 * share:.0f}% of the checked test points have Pareto k-hat above 0.7, "
            "so their importance weights are heavy-tailed: <code>test_log_likelihood_mcse</code> is unreliable "
            "(it understates the error, and <code>test_log_likelihood_mcse_reliable</code> is false) and the "
            "estimate may sit below the true log-likelihood by more than it says (Yao et al., arXiv:1802.02538). "
            "What holds for any guide is <code>test_log_likelihood_lower_95</code>: with 95% probability the true "
            "mean log-likelihood is at least that (Grosse et al., arXiv:1511.02543).")


def _base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _latent(latent: dict[str, Any]) -> dict[str, Any]:
    keep = ("active_units", "num_units", "dead_units", "collapsed", "mutual_information", "mutual_information_se",
            "mutual_information_upper_bound")
    return {k: latent[k] for k in keep if k in latent}


def _checks(checks: dict[str, Any]) -> dict[str, str]:
    rows = {}
    for name, c in checks["statistics"].items():
        if isinstance(c["p_value"], list):  # a statistic per pixel: report how many look extreme
            p = c["p_value"]
            extreme = sum(1 for v in p if v is not None and (v < 0.01 or v > 0.99))
            rows[name] = f"{extreme} of {len(p)} coordinates with p < 0.01 or p > 0.99"
        else:
            rows[name] = f"observed {c['observed']:.3f}, replicated {c['replicated_mean']:.3f} ± " \
                         f"{c['replicated_sd']:.3f}, p = {c['p_value']:.2f}"
    return rows


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: json.dumps(v)})
    return out


def _text_table(values: dict[str, str]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                               for k, v in values.items()) + "</table>"


def _table(values: dict[str, Any]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                               for k, v in values.items()) + "</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in value.items())
    return html.escape(str(value))
