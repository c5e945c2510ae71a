"""``aezoo compare RUN_DIR...``: the settings that differ, the metrics side by side, paired differences.

Runs that were scored on the same test points (same data set, binarization and test size, so the
same images in the same order) are compared **paired**: for each run against the first, the mean
of the per-datum differences of the test log-likelihood and its standard error
``sd(d) / sqrt(N)``, much smaller than the unpaired errors when the runs agree on which images are
hard. The validation curves (or, without validation, the training losses) are overlaid in one
figure, and the whole comparison is also written as a self-contained HTML page.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aezoo.diagnostics.suite import PER_DATUM_FILE
from aezoo.evaluations import read_config
from aezoo.tracking import flat_config

METRICS = ("test_log_likelihood", "test_log_likelihood_se", "test_elbo", "test_accuracy", "active_units",
           "khat_share_above_0.7", "epochs", "train_seconds")
IGNORED = ("versions", "device", "checkpoint_sha256")


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat_config(cfg).items() if k.split(".")[0] not in IGNORED}


def _curve(run: Path) -> tuple[str, list[float]]:
    path = run / "losses.csv"
    if not path.exists():
        return "", []
    lines = [line.split(",") for line in path.read_text().splitlines()]
    column = 2 if len(lines[0]) > 2 else 1
    return lines[0][column], [float(row[column]) for row in lines[1:]]


def compare(runs: list[str | Path]) -> dict[str, Any]:
    """The comparison of ``runs`` (run folders, the first is the reference).

    Returns:
        ``{"runs", "differing_settings": {key: [value per run]}, "metrics": {name: [value per run]},
        "paired": [{"run", "mean_difference", "se", "num_data"} or None per run after the first]}``;
        differences are ``run - first`` in nats per datum.

    Raises:
        ValueError: fewer than two runs, or a folder that is not an evaluated run.
    """
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise ValueError("aezoo compare needs at least two run folders")
    configs, metrics = [], []
    for run in runs:
        configs.append(_flat(read_config(run)))
        path = run / "metrics.json"
        if not path.exists():
            raise ValueError(f"{run} has no metrics.json: evaluate it first (aezoo eval {run})")
        metrics.append(json.loads(path.read_text()))
    keys = sorted(set().union(*configs))
    differing = {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}
    table = {m: [r.get(m) for r in metrics] for m in METRICS if any(r.get(m) is not None for r in metrics)}
    same_test = [all(configs[i].get(k) == configs[0].get(k) for k in ("data.name", "data.binarize", "data.test_size"))
                 for i in range(len(runs))]
    first = runs[0] / PER_DATUM_FILE
    paired = []
    for run, same in zip(runs[1:], same_test[1:]):
        other = run / PER_DATUM_FILE
        if not (same and first.exists() and other.exists()):
            paired.append(None)
            continue
        d = np.load(other) - np.load(first)
        paired.append({"run": str(run), "mean_difference": float(d.mean()),
                       "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan,
                       "num_data": len(d)})
    return {"runs": [str(r) for r in runs], "differing_settings": differing, "metrics": table, "paired": paired}


def text(result: dict[str, Any]) -> str:
    """The comparison as a plain-text table for the terminal."""
    names = [f"run {i}" for i in range(len(result["runs"]))]
    lines = [f"run {i}: {r}" for i, r in enumerate(result["runs"])]
    for title, block in (("settings that differ", result["differing_settings"]), ("metrics", result["metrics"])):
        lines.append(f"\n{title}:")
        rows = [("", *names)] + [(k, *map(_cell, v)) for k, v in block.items()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("\npaired test log-likelihood differences against run 0 (nats per datum, same test points):")
    for i, p in enumerate(result["paired"], start=1):
        shown = ("not paired (other test points, or no per-datum file)" if p is None
                 else f"{p['mean_difference']:+.3f} ± {p['se']:.3f} (N = {p['num_data']})")
        lines.append(f"  run {i} - run 0: {shown}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return "–" if value is None else str(value)


def write_html(result: dict[str, Any], path: str | Path) -> Path:
    """A self-contained page with the tables and the overlaid curves; returns ``path``."""
    path = Path(path)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    label = ""
    for i, run in enumerate(result["runs"]):
        label, curve = _curve(Path(run))
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, marker=".", label=f"run {i}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label.replace("_", " ") or "loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    fig.tight_layout()
    png = path.with_name(f".{path.name}.png")
    fig.savefig(png, dpi=100)
    image = base64.b64encode(png.read_bytes()).decode()
    png.unlink()
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>aezoo compare</title></head><body>"
            f"<h1>aezoo compare</h1><pre>{html.escape(text(result))}</pre>"
            f'<img alt="curves" src="data:image/png;base64,{image}"></body></html>')
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page)
    tmp.replace(path)
    return path
