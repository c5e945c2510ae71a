"""The command line end to end: list, fit (synthetic, digits), resume, eval, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from aezoo import cli
from aezoo.models import load

RUN_FILES = {"config.json", "checkpoint.pt", "losses.csv", "metrics.json", "reconstructions.png", "samples.png",
             "loss.png", "report.html", "diagnostics.json", "posterior.nc"}


def run(*argv: str) -> int:
    return cli.main(list(argv))


def read_losses(run_dir) -> list[float]:
    with open(run_dir / "losses.csv") as f:
        return [float(r["loss_nats_per_datum"]) for r in csv.DictReader(f)]


def test_list_names_everything(capsys):
    assert run("list") == 0
    out = capsys.readouterr().out
    for word in ("vae", "linear_gaussian", "svi", "iwae", "mnist", "digits", "synthetic"):
        assert f"  {word} " in out


def test_list_shows_the_datasets_and_engines_that_apply_to_each_model(capsys):
    assert run("list") == 0
    lines = capsys.readouterr().out.splitlines()

    def applies(model: str) -> tuple[set[str], set[str]]:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"  {model} "))
        datasets, engines = lines[i + 1].split("datasets: ")[1].split("; engines: ")
        return set(datasets.split(", ")), set(engines.split(", "))

    data, engines = applies("gppvae")  # needs the covariate c: only data that provide it
    assert "rotated_mnist" in data and "digits" not in data and "mnist" not in data and "iwae" not in engines
    data, engines = applies("svae")  # sequences only
    assert "lds_video" in data and "mnist" not in data
    data, engines = applies("vae")  # local latents: no MCMC from the command line
    assert {"mnist", "digits", "synthetic"} <= data and "lds_video" not in data and engines == {"svi", "iwae", "rws"}
    assert applies("wae")[1] == {"svi"} and {"sghmc", "nuts"} <= applies("bayesian_ae")[1]
    assert {"mnist", "mnist_q1"} <= applies("cvae")[0] and "svi" in applies("gmvae")[1]  # its traceenum default


def test_fit_synthetic_linear_gaussian_writes_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = run("fit", "linear_gaussian", "--data", "synthetic", "--engine", "svi", "--epochs", "3", "--lr", "0.05",
               "--batch-size", "50", "--num-particles", "200", "--seed", "3", "--out", str(out), "--no-progress")
    assert code == 0
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    for key in ("test_log_likelihood", "test_elbo", "num_particles", "epochs", "train_seconds", "model", "engine",
                "data", "exact_test_log_likelihood"):
        assert key in metrics
    assert metrics["epochs"] == 3 and metrics["num_particles"] == 200 and metrics["model"] == "linear_gaussian"
    assert config["seed"] == 3 and config["engine"]["config"]["lr"] == 0.05 and "torch" in config["versions"]
    # the IS estimate is a stochastic lower bound of the exact value; with K=200 it sits well within 1 nat
    assert metrics["test_elbo"] <= metrics["test_log_likelihood"] + 1e-6
    assert abs(metrics["test_log_likelihood"] - metrics["exact_test_log_likelihood"]) < 1.0
    assert len(read_losses(out)) == 3
    assert "report:" in capsys.readouterr().out


def test_fit_digits_iwae_with_settings_then_resume_and_eval(tmp_path):
    out = tmp_path / "run"
    args = ["fit", "vae", "--data", "digits", "--engine", "iwae", "--set", "model.z_dim=3",
            "--set", "model.hidden_dims=16", "--set", "engine.num_particles=3", "--train-size", "200",
            "--test-size", "20", "--num-particles", "20", "--out", str(out), "--no-progress"]
    assert run(*args, "--epochs", "1") == 0
    first = json.loads((out / "metrics.json").read_text())
    ae = load(out)
    assert ae.config.z_dim == 3 and ae.config.x_dim == 64 and ae.config.hidden_dims == (16,)
    assert run(*args, "--epochs", "2") == 0  # resumes: trains one more epoch
    losses = read_losses(out)
    assert len(losses) == 2 and abs(losses[0] - first["final_train_loss"]) < 1e-5
    full = (out / "metrics.json").read_text()
    assert run("eval", str(out), "--num-particles", "7") == 0  # another K: its own folder, the run's kept
    assert json.loads((out / "eval-K7-n20" / "metrics.json").read_text())["num_particles"] == 7
    assert (out / "metrics.json").read_text() == full and (out / "eval-K7-n20" / "report.html").exists()


def test_eval_modes_quick_none_and_reuse(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8",
            "--epochs", "1", "--train-size", "100", "--out", str(out), "--no-progress"]
    assert run(*args, "--eval", "none") == 0
    assert "trained; evaluate with: aezoo eval" in capsys.readouterr().out and not (out / "metrics.json").exists()
    assert run("eval", str(out), "--quick") == 0
    quick = json.loads((out / "eval-K500-n300" / "metrics.json").read_text())
    assert quick["num_particles"] == 500 and quick["num_test"] == 300 and not (out / "metrics.json").exists()
    assert "eval-K500-n300/report.html" in capsys.readouterr().out
    assert run("eval", str(out), "--quick") == 0  # same checkpoint: read back, not recomputed
    assert "reused" in capsys.readouterr().out
    assert run(*args, "--epochs", "2", "--eval", "quick") == 0  # trained on: the checkpoint changed
    again = json.loads((out / "eval-K500-n300" / "metrics.json").read_text())
    assert again["epochs"] == 2 and again["checkpoint_sha256"] != quick["checkpoint_sha256"]


def test_fit_refuses_a_folder_holding_another_run(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["fit", "linear_gaussian", "--epochs", "1", "--num-particles", "5", "--out", str(out), "--no-progress"]
    assert run(*base) == 0
    assert run(*base, "--lr", "0.5") == 2
    assert "differs in engine.config.lr" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["fit", "nope"], "unknown model 'nope'"),
    (["fit", "vae", "--engine", "nope"], "unknown engine"),
    (["fit", "vae", "--set", "model.zdim=3"], "unknown setting model.zdim; valid: model.activation"),
    (["fit", "vae", "--set", "z_dim=3"], "must start with 'model.' or 'engine.'"),
    (["fit", "vae", "--set", "model.z_dim=three"], "cannot read model.z_dim='three'"),
    (["fit", "vae", "--data", "digits", "--binarize", "none"], "Bernoulli likelihood needs binary data"),
    (["fit", "vae", "--data", "digits", "--set", "model.x_dim=10"], "expected data of shape (B, 10)"),
])
def test_bad_input_gives_clear_error(tmp_path, capsys, argv, message):
    assert run(*argv, "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress") == 2
    assert message in capsys.readouterr().err


def test_eval_of_corrupt_checkpoint_is_explained(tmp_path, capsys):
    out = tmp_path / "run"
    assert run("fit", "linear_gaussian", "--epochs", "1", "--num-particles", "5", "--out", str(out),
               "--no-progress") == 0
    (out / "checkpoint.pt").write_bytes(b"garbage")
    assert run("eval", str(out)) == 2
    assert "corrupt" in capsys.readouterr().err


def test_same_seed_same_numbers(tmp_path):
    metrics = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run("fit", "vae", "--data", "digits", "--train-size", "100", "--test-size", "10", "--epochs", "1",
                   "--num-particles", "10", "--set", "model.hidden_dims=8", "--out", str(out), "--no-progress") == 0
        metrics.append(json.loads((out / "metrics.json").read_text()))
        assert torch.load(out / "checkpoint.pt", weights_only=True)["losses"].shape == (1,)
    for key in ("test_log_likelihood", "test_elbo", "final_train_loss"):
        assert metrics[0][key] == metrics[1][key]


def test_eval_writes_every_diagnostic_and_a_report_with_every_figure(tmp_path):
    from aezoo.report import FIGURES

    out = tmp_path / "run"
    assert run("fit", "vae", "--data", "digits", "--train-size", "200", "--test-size", "60", "--epochs", "1",
               "--num-particles", "30", "--set", "model.hidden_dims=16", "--set", "model.z_dim=4", "--out", str(out),
               "--no-progress") == 0
    diag = json.loads((out / "diagnostics.json").read_text())
    for key in ("log_likelihood", "bounds", "elbo_decomposition", "latent", "guide_quality", "predictive_checks",
                "subsample", "figures"):
        assert key in diag
    assert diag["log_likelihood"]["num_particles"] == 30 and diag["subsample"] == 60
    assert set(diag["latent"]["kl_per_dimension"]) == {"z"} and len(diag["latent"]["kl_per_dimension"]["z"]) == 4
    assert len(diag["guide_quality"]["khat"]) == 60
    page = (out / "report.html").read_text()
    for name in set(FIGURES) - {"trace.png", "rank.png"}:  # those two are MCMC runs' figures
        assert (out / name).stat().st_size > 0
        assert f'alt="{name}"' in page
    assert "MCMC convergence" not in page
    assert (out / "posterior.nc").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["active_units"]["z"] == sum(v > 0.01 for v in diag["latent"]["activity"]["z"])


MCMC_FILES = {"config.json", "checkpoint.pt", "mcmc_checkpoint.pt", "posterior_samples.pt", "metrics.json",
              "diagnostics.json", "trace.png", "rank.png", "reconstructions.png", "report.html"}


def test_mcmc_run_of_a_bayesian_autoencoder_samples_resumes_and_evaluates(tmp_path, capsys):
    out = tmp_path / "bae"
    args = ["fit", "bayesian_ae", "--data", "digits", "--train-size", "100", "--test-size", "50", "--out", str(out),
            "--set", "model.hidden_dims=4", "--set", "engine.warmup_steps=20", "--set", "engine.num_samples=10",
            "--set", "engine.thin=1", "--set", "engine.batch_size=50", "--no-progress"]
    assert run(*args, "--set", "engine.num_chains=1") == 0
    assert MCMC_FILES <= {p.name for p in out.iterdir()}
    first = torch.load(out / "posterior_samples.pt", weights_only=True)["samples"]
    assert run(*args, "--set", "engine.num_chains=2") == 0  # resumes: chain 0 is kept, chain 1 is added
    second = torch.load(out / "posterior_samples.pt", weights_only=True)["samples"]
    for name, draws in first.items():
        assert draws.shape[:2] == (1, 10) and second[name].shape[:2] == (2, 10)
        assert torch.equal(second[name][:1], draws)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "sghmc" and metrics["num_chains"] == 2 and metrics["num_test"] == 50
    assert metrics["test_log_predictive"] < 0 and metrics["r_hat_max"] >= 1.0
    assert "test posterior predictive" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert "MCMC convergence" in html and html.count("data:image/png;base64") == 3


def test_mcmc_over_every_training_points_local_latents_is_refused(tmp_path, capsys):
    assert run("fit", "vae", "--data", "digits", "--engine", "nuts", "--out", str(tmp_path / "v"), "--no-progress") == 2
    assert "local latents ['z']" in capsys.readouterr().err


def test_an_engine_setting_it_does_not_have_is_refused(tmp_path, capsys):
    assert run("fit", "bayesian_ae", "--data", "digits", "--epochs", "3", "--out", str(tmp_path / "b")) == 2
    assert "has no epochs setting" in capsys.readouterr().err


def test_sequence_run_uses_the_mask_and_reports_imputation(tmp_path):
    out = tmp_path / "seq"
    assert run("fit", "markov_gp_vae", "--data", "lds_video", "--train-size", "40", "--test-size", "20", "--epochs",
               "2", "--num-particles", "10", "--out", str(out), "--no-progress") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 20 and metrics["epochs"] == 2
    # The mask reached the model: log p(x) is over the observed entries only, fewer than T * D_x = 320.
    assert 0 < metrics["observed_entries_per_sequence"] < 320
    assert metrics["imputation_mse"] > 0 and metrics["mean_imputation_mse"] > 0
    assert "Note" in (out / "report.html").read_text()


@pytest.mark.parametrize("argv", [["gppvae", "--data", "rotated_mnist", "--train-size", "64", "--test-size", "16"],
                                  ["bayesian_ae", "--data", "digits", "--engine", "svi", "--train-size", "64",
                                   "--test-size", "16"]], ids=["gppvae", "bayesian_ae-svi"])
def test_models_with_global_latents_report_the_test_elbo(argv, tmp_path, capsys):
    out = tmp_path / "run"
    assert run("fit", *argv, "--epochs", "1", "--out", str(out), "--no-progress") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 16 and metrics["test_elbo"] < 0 and "test_log_likelihood" not in metrics
    assert "test ELBO" in capsys.readouterr().out and (out / "reconstructions.png").exists()


def test_version_threads_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        run("--version")
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("aezoo ")
    with pytest.raises(SystemExit):
        run("fit", "--help")
    assert "(default: 5000)" in capsys.readouterr().out
    threads = torch.get_num_threads()
    try:
        assert run("--threads", "1", "list") == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert run("--threads", "0", "list") == 2 and "--threads must be an integer >= 1" in capsys.readouterr().err


HEALTHY = {"kind": "importance", "active_units": {"z": 5}, "num_units": {"z": 8}, "khat_share_above_0.7": 0.0,
           "test_log_likelihood_mcse_reliable": True, "test_log_likelihood_lower_95": -90.0}


@pytest.mark.parametrize("changes, fires", [
    ({}, None),
    ({"active_units": {"z1": 3, "z2": 0}, "num_units": {"z1": 8, "z2": 4}}, "none of the 4 units of z2 is active"),
    ({"khat_share_above_0.7": 0.93, "test_log_likelihood_mcse_reliable": False}, "93% of the checked test points"),
    ({"kind": "mcmc", "r_hat_max": 4.7, "ess_bulk_min": 900.0, "num_chains": 4}, "split R-hat reaches 4.70"),
    ({"kind": "mcmc", "r_hat_max": 1.0, "ess_bulk_min": 250.0, "num_chains": 4}, "smallest bulk ESS is 250"),
    ({"kind": "mcmc", "r_hat_max": 1.0, "ess_bulk_min": 900.0, "num_chains": 4, "divergences": 3},
     "3 divergent transitions"),
    ({"kind": "sequence", "imputation_mse": 0.9, "mean_imputation_mse": 0.5}, "no better than filling in the mean"),
    ({"kind": "sequence", "imputation_mse": 0.2, "mean_imputation_mse": 0.5}, None),
    ({"kind": "reconstruction", "test_log_likelihood_mcse_reliable": False, "test_log_likelihood_lower_95": None},
     None),  # a point-mass guide: no importance sampling, nothing to say about its error
])
def test_verdicts_fire_on_bad_runs_and_stay_quiet_on_healthy_ones(changes, fires):
    from aezoo.report import verdicts

    found = verdicts({**HEALTHY, **changes})
    assert found == [] if fires is None else (len(found) == 1 and fires in found[0]), found


def test_a_collapsed_run_is_flagged_in_the_report_and_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"  # beta = 200 drives every unit to the prior
    assert run("fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8",
               "--set", "engine.beta=200", "--epochs", "5", "--batch-size", "20", "--lr", "1e-2", "--train-size", "200",
               "--test-size", "50",
               "--num-particles", "30", "--out", str(out), "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "warning: posterior collapse: none of the 2 units of z is active" in printed
    page = (out / "report.html").read_text()
    assert 'class="verdict warn"' in page and "posterior collapse" in page


def test_compare_two_digits_runs_prints_the_paired_difference(tmp_path, capsys):
    base = ["fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8",
            "--train-size", "200", "--test-size", "40", "--num-particles", "20", "--no-progress"]
    assert run(*base, "--epochs", "1", "--out", str(tmp_path / "a")) == 0
    assert run(*base, "--epochs", "4", "--out", str(tmp_path / "b")) == 0
    capsys.readouterr()
    page = tmp_path / "cmp.html"
    assert run("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--html", str(page)) == 0
    printed = capsys.readouterr().out
    assert "engine.config.epochs" in printed and "test_log_likelihood" in printed
    a = np.load(tmp_path / "a" / "log_likelihood_per_datum.npy")
    b = np.load(tmp_path / "b" / "log_likelihood_per_datum.npy")
    d = b - a  # paired on the same 40 test digits
    assert f"run 1 - run 0: {d.mean():+.3f} ± {d.std(ddof=1) / len(d) ** 0.5:.3f} (N = 40)" in printed
    assert page.exists() and "data:image/png;base64" in page.read_text()
    assert run("compare", str(tmp_path / "a")) == 2 and "at least two run folders" in capsys.readouterr().err


def test_report_rows_have_labels_units_rounding_and_the_published_reference():
    from aezoo.report import metric_rows

    rows = metric_rows({"kind": "importance", "model": "vae", "data": "mnist", "binarize": "dynamic",
                        "test_log_likelihood": -94.951234, "eval_seconds": 168.2157, "khat_share_above_0.7": 0.925,
                        "checkpoint_sha256": "ab", "active_units": {"z": 16}, "something_new": 0.123456789})
    assert rows["test log-likelihood (importance sampled) (nats per datum)"] == "-94.95"
    assert rows["evaluation time (s)"] == "168.2" and rows["test points with Pareto k-hat above 0.7"] == "92.5%"
    assert rows["active units per site"] == "z: 16" and rows["something_new"] == "0.1235"
    assert rows["published test log-likelihood (nats per datum)"].startswith("-86.76 (Burda et al.")
    assert not any("sha256" in k for k in rows)
    assert "published test log-likelihood (nats per datum)" not in metric_rows({"kind": "importance", "model": "vae",
                                                                                "data": "digits"})


def test_the_report_renders_in_a_headless_browser(tmp_path, capsys):
    import shutil
    import subprocess

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser installed")
    out = tmp_path / "run"
    assert run("fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8",
               "--epochs", "1", "--train-size", "100", "--test-size", "20", "--num-particles", "10",
               "--out", str(out), "--no-progress") == 0
    dom = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
                          (out / "report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'class="verdict' in dom and "test log-likelihood (importance sampled)" in dom and dom.count("<img") >= 3
