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
    sections.insert(0, ("Metrics", "Log-likelihoods are in nats per datum; <code>test_log_likelihood</code> is the "
                                   "importance-sampled estimate with <code>num_particles</code> samples (Burda et al., "
                                   "arXiv:1509.00519)." + _khat_warning(diagnostics), _table(metrics)))
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
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
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
    keep = ("active_units", "num_units", "collapsed", "mutual_information", "mutual_information_se",
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


def _table(values: dict[str, Any]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                               for k, v in values.items()) + "</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{html.escape(str(k))}: {_fmt(v)}" for k, v in value.items())
    return html.escape(str(value))
