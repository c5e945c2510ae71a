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
    body = "".join(f"<h2>{name}</h2><p>{note}</p>{content}" for name, note, content in sections)
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
pre{{background:#f6f6f6;padding:1em;overflow:auto}}figure{{margin:1.5em 0}}</style></head><body>
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
