"""A single self-contained ``report.html`` per run: metrics, config and the run's figures embedded."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

FIGURES = ("loss.png", "reconstructions.png", "samples.png")


def write(run_dir: str | Path, metrics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``run_dir/report.html`` and return its path; figures missing from the folder are skipped."""
    run_dir = Path(run_dir)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in metrics.items()
    )
    figures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode((run_dir / name).read_bytes()).decode()}">'
        f"<figcaption>{name}</figcaption></figure>"
        for name in FIGURES
        if (run_dir / name).exists()
    )
    title = f"aezoo run: {metrics['model']} / {metrics['engine']} / {metrics['data']}"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}img{{max-width:100%}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Log-likelihoods are in nats per datum; <code>test_log_likelihood</code> is the importance-sampled
estimate with <code>num_particles</code> samples (Burda et al., arXiv:1509.00519).</p>
<h2>Metrics</h2><table>{rows}</table>
<h2>Figures</h2>{figures}
<h2>Config</h2><pre>{html.escape(json.dumps(config, indent=2))}</pre>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))
