"""The two-stochastic-layer VAE: bound ordering over both layers, per-layer diagnostics, the default objective."""

from __future__ import annotations

import json

import pyro
import pytest
import torch

from aezoo import cli, data
from aezoo.diagnostics import collapse_report, importance_estimate, iwae_bounds
from aezoo.inference import ENGINES
from aezoo.models import hvae

CFG = hvae.Config(x_dim=64, z1_dim=8, z2_dim=4, hidden1=(32,), hidden2=(16,))


@pytest.fixture(scope="module")
def trained():
    with pyro.settings.context(module_local_params=True):
        ds = data.load("digits", "static")
        torch.manual_seed(0)
        ae = hvae.build(CFG)
        name, fields = hvae.DEFAULT_ENGINE
        ENGINES[name](**fields, epochs=10, batch_size=50, lr=3e-3, progress=False).fit(ae, ds.train)
    return ae, ds.test[:150]


def test_bounds_rise_with_k_towards_the_importance_sampled_likelihood(trained):
    # E ELBO <= E IWAE_5 <= E IWAE_50 <= log p(x) (Burda et al., Theorem 1), compared as paired
    # averages over the test data with 3 standard errors (each comparison fails by chance < 0.2 %)
    ae, x = trained
    bounds = iwae_bounds(ae, x, ks=(1, 5, 50), num_groups=20)
    reference = importance_estimate(ae, x, num_particles=5000).log_likelihood
    steps = [bounds.estimates[5] - bounds.estimates[1], bounds.estimates[50] - bounds.estimates[5],
             reference - bounds.estimates[50]]
    for i, d in enumerate(steps[:2]):
        assert d.mean() > 3 * d.std() / len(d) ** 0.5, f"step {i}: {d.mean():.4f}"
    assert steps[2].mean() > -3 * steps[2].std() / len(x) ** 0.5


def test_both_layers_are_diagnosed(trained):
    ae, x = trained
    report = collapse_report(ae, x)
    assert set(report.units) == {"z1", "z2"}
    assert report.units["z1"].variance.shape == (CFG.z1_dim,) and report.units["z2"].variance.shape == (CFG.z2_dim,)
    assert report.active_units["z1"] >= 1  # a trained first layer carries information


def test_closed_form_kl_is_refused_and_the_default_objective_runs_from_the_cli(tmp_path, capsys):
    ae = hvae.build(CFG)
    x = hvae.example_data(CFG, 8)[0]
    with pytest.raises(ValueError, match="not mean field"):
        ENGINES["svi"](progress=False).check(ae, x)
    out = tmp_path / "run"
    assert cli.main(["fit", "hvae", "--data", "digits", "--set", "model.z1_dim=8", "--set", "model.z2_dim=4",
                     "--set", "model.hidden1=32", "--set", "model.hidden2=16", "--epochs", "1", "--train-size", "200",
                     "--test-size", "20", "--num-particles", "50", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["active_units"]) == {"z1", "z2"} and metrics["test_elbo"] <= metrics["test_log_likelihood"]
    assert json.loads((out / "config.json").read_text())["engine"]["config"]["analytic_kl"] is False
    capsys.readouterr()
