"""Bad input, faults and concurrency: every case raises (API) or prints (CLI) a message that says what to do.

Each case names the exact exception type and a pattern of its message, as Pyro's ``assert_error``
does; CLI cases check the exit status, the ``aezoo: error:`` line and that a refused command left
the run folder as it was. The kill -9 cases resume every engine family (the shared gradient loop
through svi and rws, whole MCMC chains through nuts, in-chain SGHMC state) bit-exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from aezoo import cli, runs
from aezoo.inference import ENGINES
from aezoo.inference.loop import Diverged
from aezoo.models import MODELS

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("--data", "digits", "--epochs", "1", "--train-size", "100", "--test-size", "20", "--num-particles", "10",
         "--no-progress", "--set", "model.hidden_dims=8", "--set", "model.z_dim=2")


# ---------------------------------------------------------------- engine and config fields (API)

ENGINE_CASES = [
    ("svi", {"epochs": 0}, "epochs must be an integer >= 1"),
    ("svi", {"epochs": -1}, "epochs must be an integer >= 1"),
    ("svi", {"epochs": 1.5}, "epochs must be an integer >= 1"),
    ("svi", {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ("svi", {"batch_size": -5}, "batch_size must be an integer >= 1"),
    ("svi", {"lr": 0.0}, "lr must be a finite number > 0"),
    ("svi", {"lr": -1e-3}, "lr must be a finite number > 0"),
    ("svi", {"lr": float("nan")}, "lr must be a finite number > 0"),
    ("svi", {"lr": float("inf")}, "lr must be a finite number > 0"),
    ("svi", {"seed": -1}, "seed must be an integer >= 0"),
    ("svi", {"num_particles": 0}, "num_particles must be an integer >= 1"),
    ("svi", {"num_particles": -1}, "num_particles must be an integer >= 1"),
    ("svi", {"labelled_per_batch": -1}, "labelled_per_batch must be an integer >= 0"),
    ("svi", {"divergence_factor": -1.0}, "divergence_factor must be a finite number >= 0"),
    ("svi", {"beta": -0.5}, "beta must be non-negative"),
    ("svi", {"elbo": "renyi"}, "unknown elbo 'renyi'"),
    ("iwae", {"num_particles": 0}, "num_particles and num_groups must be at least 1"),
    ("iwae", {"estimator": "magic"}, "unknown estimator 'magic'"),
    ("rws", {"num_particles": 0}, "num_particles must be at least 1"),
    ("rws", {"epochs": 0}, "epochs must be an integer >= 1"),
    ("nuts", {"num_samples": 0}, "num_samples must be an integer >= 1"),
    ("nuts", {"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
    ("nuts", {"num_chains": 0}, "num_chains must be an integer >= 1"),
    ("nuts", {"step_size": 0.0}, "step_size must be a finite number > 0"),
    ("nuts", {"target_accept": 1.5}, r"target_accept must lie in \(0, 1\)"),
    ("nuts", {"max_tree_depth": 0}, "max_tree_depth must be an integer >= 1"),
    ("nuts", {"init_strategy": "zeros"}, "unknown init_strategy 'zeros'"),
    ("hmc", {"num_steps": 0}, "num_steps must be an integer >= 1"),
    ("hmc", {"backend": "stan"}, "backend='stan'"),
    ("sghmc", {"lr": 0.0}, "the step size must be positive"),
    ("sghmc", {"thin": 0}, "thin=0; must be at least 1"),
    ("sghmc", {"num_chains": 0}, "num_chains must be an integer >= 1"),
]


@pytest.mark.parametrize("engine, fields, message", ENGINE_CASES, ids=[f"{e}-{next(iter(f))}={next(iter(f.values()))}"
                                                                       for e, f, _ in ENGINE_CASES])
def test_engine_fields_are_checked_where_they_are_set(engine, fields, message):
    with pytest.raises(ValueError, match=message):
        ENGINES[engine](**fields)


CONFIG_CASES = [
    ("vae", {"z_dim": 0}, "z_dim must be an integer >= 1"),
    ("vae", {"x_dim": -3}, "x_dim must be an integer >= 1"),
    ("vae", {"hidden_dims": (8, 0)}, "every entry of hidden_dims must be an integer >= 1"),
    ("vae", {"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
    ("vae", {"network": "transformer"}, "unknown network 'transformer'"),
    ("vae", {"flow_layers": -1}, "flow_layers must be non-negative"),
    ("hvae", {"z2_dim": 0}, "z2_dim must be an integer >= 1"),
    ("hvae", {"hidden1": (0,)}, "every entry of hidden1 must be an integer >= 1"),
    ("m2", {"num_classes": 1}, "num_classes must be at least 2"),
    ("vamp_vae", {"num_pseudo": 0}, "num_pseudo must be an integer >= 1"),
    ("dmm", {"rnn_dim": 0}, "rnn_dim must be an integer >= 1"),
    ("dmm", {"seq_len": 0}, "seq_len must be an integer >= 1"),
    ("linear_gaussian", {"sigma": -1.0}, "sigma must be a finite number > 0"),
    ("linear_gaussian", {"z_dim": 0}, "z_dim must be an integer >= 1"),
    ("bayesian_ae", {"prior_scale": 0.0}, "prior_scale must be positive"),
    ("gppvae", {"num_inducing": 0}, "num_inducing must be an integer >= 1"),
    ("svae", {"state_dim": 0}, "state_dim must be an integer >= 1"),
]


@pytest.mark.parametrize("model, fields, message", CONFIG_CASES,
                         ids=[f"{m}-{next(iter(f))}" for m, f, _ in CONFIG_CASES])
def test_model_configs_are_checked_where_they_are_set(model, fields, message):
    with pytest.raises(ValueError, match=message):
        MODELS[model].Config(**fields)


def test_gated_layers_outside_an_mlp_are_refused_at_build():
    with pytest.raises(ValueError, match="gated activation applies to MLP layers"):
        MODELS["vae"].build(MODELS["vae"].Config(x_dim=64, network="conv", image_shape=(8, 8), activation="gated"))


# ---------------------------------------------------------------- data from Python


@pytest.fixture
def vae():
    cfg = MODELS["vae"].Config(x_dim=6, z_dim=2, hidden_dims=(4,))
    torch.manual_seed(0)
    return MODELS["vae"].build(cfg), torch.bernoulli(torch.full((40, 6), 0.5))


def quick(**fields):
    return ENGINES["svi"](epochs=1, batch_size=20, progress=False, **fields)


def test_numpy_float64_and_integer_data_are_converted_with_a_note(vae):
    ae, x = vae
    for data in (x.double().numpy(), x.long(), x.numpy().astype(np.int32), x.bool()):
        with pytest.warns(UserWarning, match="aezoo converted the data to the model's dtype"):
            fit = quick().fit(ae, data)
        assert torch.isfinite(fit.losses).all()
    from aezoo.diagnostics import importance_estimate
    with pytest.warns(UserWarning, match="numpy float64 -> torch"):
        assert importance_estimate(ae, x.double().numpy(), num_particles=5).log_likelihood.shape == (40,)


DATA_CASES = [
    ("empty", lambda x: (x[:0],), ValueError, r"the data are empty \(x has 0 rows\)"),
    ("none", lambda x: (None,), ValueError, "need at least the data tensor x"),
    ("list", lambda x: (x.tolist(),), ValueError, "data entry 0 is a list; pass a torch tensor or a numpy array"),
    ("strings", lambda x: (np.array([["a"] * 6] * 4),), ValueError, "numpy array of <U1; pass numbers"),
    ("nan", lambda x: (torch.where(x > 0, float("nan"), 0.0),), ValueError, "NaN"),
    ("grey", lambda x: (x * 0.5,), ValueError, "binary"),
    ("above_one", lambda x: (x * 3,), ValueError, "binary"),
    ("shape", lambda x: (x[:, :5],), ValueError, "6"),
    ("grey_above_one", lambda x: (x * 3, "binarize"), ValueError, r"grey levels must lie in \[0, 1\]"),
    ("rank", lambda x: (x[:, :, None],), ValueError, "shape"),
]


@pytest.mark.parametrize("name, make, error, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_from_python_is_refused_with_advice(vae, name, make, error, message):
    ae, x = vae
    data = make(x)
    transform = None
    if isinstance(data[-1], str):  # "binarize": through the dynamic binarization transform
        from aezoo.data.base import dynamic_binarize as transform
        data = data[:-1]
    with pytest.raises(error, match=message):
        quick().fit(ae, *data, transform=transform)


def test_a_diverging_fit_stops_and_keeps_the_last_good_epoch(vae, tmp_path):
    ae, x = vae
    ckpt = tmp_path / "ckpt.pt"
    quick().fit(ae, x, checkpoint=ckpt)
    good = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with pytest.raises(Diverged, match=r"svi diverged: .*Lower the learning rate \(lr=1e\+06\)"):
        ENGINES["svi"](epochs=3, batch_size=20, lr=1e6, progress=False).fit(ae, x, checkpoint=ckpt)
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == good  # the diverged epoch was not saved
    assert issubclass(Diverged, FloatingPointError)


def test_a_nan_gradient_is_never_applied(vae):
    ae, x = vae
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    ae.model.decoder[0].weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(Diverged, match="a gradient became NaN or infinite in epoch 1 .the step was not applied."):
        quick().fit(ae, x)
    assert all(torch.equal(before[k], v) for k, v in ae.state_dict().items())


def test_two_models_in_one_process_never_share_guide_parameters():
    # bayesian_ae has an AutoNormal guide: with Pyro's global param store the second model would read the first's
    module = MODELS["bayesian_ae"]
    cfg = module.Config(x_dim=6, z_dim=2, hidden_dims=(3,))
    x = torch.bernoulli(torch.full((10, 6), 0.5))
    first, second = module.build(cfg), module.build(cfg)
    ENGINES["svi"](epochs=3, batch_size=10, lr=0.1, progress=False).fit(first, x)
    second.guide(x)
    a, b = dict(first.guide.named_parameters()), dict(second.guide.named_parameters())
    assert a.keys() == b.keys() and not any(torch.equal(a[k], b[k]) for k in a)
    assert not list(pyro.get_param_store().keys())
    with pyro.settings.context(module_local_params=False):
        with pytest.raises(ValueError, match=r"aezoo needs pyro.settings.set\(module_local_params=True\)"):
            module.build(cfg)


# ---------------------------------------------------------------- MCMC on ordinary Pyro models


def flat_regression(x, y, scale=1.0):
    """Stan's default: improper flat priors on the coefficients and on the (positive) noise scale."""
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    pyro.deterministic("slope_scaled", scale * beta[1])
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(beta[0] + beta[1] * x, sigma), obs=y)


def regression_data(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    return x, 1.0 + 2.0 * x + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_nuts_samples_flat_priors_with_keyword_constants_and_deterministic_sites(backend):
    # With flat priors the marginal posterior of beta is a Student-t centred on the least-squares
    # fit, so its posterior mean is the OLS estimate exactly; 4 MCSE (from ArviZ's ESS) bounds the error.
    from aezoo.diagnostics import mcmc_summary

    x, y = regression_data()
    ols = torch.linalg.lstsq(torch.stack([torch.ones_like(x), x], 1), y[:, None]).solution[:, 0]
    fit = ENGINES["nuts"](num_samples=300, warmup_steps=300, num_chains=2, progress=False, backend=backend,
                          init_strategy="median").fit(flat_regression, x, y, scale=10.0)
    beta = fit.samples["beta"]
    assert beta.dtype == torch.float64  # the model's dtype, also through NumPyro
    summary = mcmc_summary(fit.samples)
    mcse = beta.reshape(-1, 2).std(0) / torch.tensor(summary["sites"]["beta"]["ess_bulk"]).clamp(min=1).sqrt()
    assert ((beta.reshape(-1, 2).mean(0) - ols).abs() < 4 * mcse + 1e-3).all(), (beta.mean((0, 1)), ols, mcse)
    torch.testing.assert_close(fit.samples["slope_scaled"], 10.0 * beta[..., 1])  # recomputed per draw
    assert fit.stats["num_steps"].min() >= 1 and fit.stats["tree_depth"].max() <= 10
    assert torch.equal(fit.stats["tree_depth"], torch.ceil(torch.log2(fit.stats["num_steps"].double() + 1)).long())


def eight_schools(sigma, y=None):
    """The non-centred eight schools model (Rubin 1981; Stan's example)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(sigma)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def test_nuts_on_a_hierarchical_model_with_init_values():
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    fit = ENGINES["nuts"](num_samples=200, warmup_steps=200, num_chains=2, progress=False,
                          init_values={"mu": 4.0, "tau": 3.0}).fit(eight_schools, sigma, y=y)
    s = fit.samples
    torch.testing.assert_close(s["theta"], s["mu"][..., None] + s["tau"][..., None] * s["eta"])
    # the posterior mean of mu is about 4.4 with sd 3.3 (Gelman et al., BDA 3rd ed., Sec. 5.5); 400 draws
    assert abs(s["mu"].mean().item() - 4.4) < 2.0 and (s["tau"] > 0).all()


def test_keyword_arguments_are_for_plain_models(vae):
    ae, x = vae
    with pytest.raises(ValueError, match=r"keyword arguments \['scale'\] apply to plain Pyro models"):
        ENGINES["nuts"](num_samples=2, warmup_steps=2, num_chains=1, progress=False).fit(ae, x, scale=1.0)


# ---------------------------------------------------------------- the command line


def cli_error(capsys, *argv: str) -> str:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("aezoo: error: ") and "Traceback" not in err
    return err


CLI_CASES = [
    ("model", ("fit", "vea"), "unknown model 'vea'"),
    ("engine", ("fit", "vae", "--engine", "adam"), "unknown engine 'adam'"),
    ("dataset", ("fit", "vae", "--data", "cifar"), "unknown dataset 'cifar'"),
    ("set_key", ("fit", "vae", *SMALL, "--set", "model.zdim=3"), "unknown setting model.zdim"),
    ("set_value", ("fit", "vae", *SMALL, "--set", "model.z_dim=two"), r"cannot read model.z_dim='two'"),
    ("set_form", ("fit", "vae", *SMALL, "--set", "z_dim"), "--set takes key=value"),
    ("set_prefix", ("fit", "vae", *SMALL, "--set", "optim.lr=1"), "must start with 'model.' or 'engine.'"),
    ("batch0", ("fit", "vae", *SMALL, "--batch-size", "0"), "batch_size must be an integer >= 1, got 0"),
    ("batch_neg", ("fit", "vae", *SMALL, "--batch-size", "-4"), "batch_size must be an integer >= 1, got -4"),
    ("epochs0", ("fit", "vae", *SMALL, "--epochs", "0"), "epochs must be an integer >= 1, got 0"),
    ("lr0", ("fit", "vae", *SMALL, "--lr", "0"), "lr must be a finite number > 0"),
    ("particles", ("fit", "vae", *SMALL, "--set", "engine.num_particles=-1"), "num_particles must be an integer"),
    ("z0", ("fit", "vae", *SMALL, "--set", "model.z_dim=0"), "z_dim must be an integer >= 1, got 0"),
    ("test1", ("fit", "vae", *SMALL, "--test-size", "1"), "test_size must be between 2 and"),
    ("train0", ("fit", "vae", *SMALL, "--train-size", "0"), "train_size must be between 1 and"),
    ("train_big", ("fit", "vae", *SMALL, "--train-size", "99999"), "train_size must be between 1 and"),
    ("K0", ("fit", "vae", *SMALL, "--num-particles", "0"), "--num-particles must be an integer >= 1, got 0"),
    ("cuda", ("fit", "vae", *SMALL, "--device", "cuda"), "no usable CUDA device|"),
    ("tpu", ("fit", "vae", *SMALL, "--device", "tpu"), "unknown device 'tpu'"),
    ("labels_multiple", ("fit", "m2", *SMALL, "--labels", "15"), "multiple of the 10 classes"),
    ("labels_none", ("fit", "m2", "--data", "lds_video", "--labels", "10"), "needs labelled data"),
    ("missing_file", ("fit", "vae", "--data", "missing.npz"), "missing.npz"),
    ("mcmc_local", ("fit", "vae", "--data", "digits", "--engine", "nuts", "--no-progress"), "has local latents"),
    ("covariate", ("fit", "gppvae", *SMALL), "needs the covariate 'c'"),
    ("bernoulli", ("fit", "vae", *SMALL, "--binarize", "none"), "binary"),
    ("set_dict", ("fit", "bayesian_ae", "--data", "digits", "--engine", "nuts", "--set", "engine.init_values=1"),
     "cannot be set from the command line; set it from Python"),
]


@pytest.mark.parametrize("name, argv, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_command_lines_print_one_error_line_and_write_nothing(tmp_path, capsys, monkeypatch, name, argv, message):
    if name == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    err = cli_error(capsys, *argv, "--out", str(out))
    assert pytest.importorskip("re").search(message, err), err
    assert not out.exists()  # refused before anything was written


def fitted(tmp_path, capsys, name="run", *extra) -> Path:
    out = tmp_path / name
    assert cli.main(["fit", "vae", *SMALL, *extra, "--out", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return out


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_refusals_into_an_existing_run_change_nothing_on_disk(tmp_path, capsys):
    out = fitted(tmp_path, capsys, "run", "--epochs", "2")
    before = snapshot(out)
    err = cli_error(capsys, "fit", "vae", *SMALL, "--out", str(out))  # SMALL has --epochs 1 < 2 done
    assert "already holds 2 epochs, more than --epochs 1" in err
    err = cli_error(capsys, "fit", "vae", *SMALL, "--epochs", "2", "--seed", "5", "--out", str(out))
    assert "holds a different run (it differs in engine.config.seed, seed)" in err
    assert snapshot(out) == before


def test_out_naming_a_file_and_an_unwritable_place(tmp_path, capsys):
    file = tmp_path / "file.txt"
    file.write_text("keep me")
    assert "is a file; name a folder" in cli_error(capsys, "fit", "vae", *SMALL, "--out", str(file))
    assert file.read_text() == "keep me"
    err = cli_error(capsys, "fit", "vae", *SMALL, "--out", str(file / "below"))
    assert "check the path and its permissions" in err


def test_eval_of_broken_run_folders(tmp_path, capsys):
    assert "is not a run folder" in cli_error(capsys, "eval", str(tmp_path / "nothing"))
    out = fitted(tmp_path, capsys)
    config = json.loads((out / "config.json").read_text())
    assert "--num-particles must be an integer >= 1, got 0" in cli_error(capsys, "eval", str(out), "--num-particles",
                                                                        "0")
    del config["eval"]
    (out / "config.json").write_text(json.dumps(config))
    assert "lacks eval.num_particles: it was not written by aezoo fit" in cli_error(capsys, "eval", str(out))
    (out / "config.json").write_text("{not json")
    assert "config.json is corrupt" in cli_error(capsys, "eval", str(out))
    other = fitted(tmp_path, capsys, "other")
    (other / "checkpoint.pt").write_bytes(b"garbage")
    assert "is corrupt or not an aezoo checkpoint" in cli_error(capsys, "eval", str(other))


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    out = fitted(tmp_path, capsys)
    with subprocess.Popen([sys.executable, "-c", (
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
            "time.sleep(60)"), str(out / runs.LOCK_FILE)], stdout=subprocess.PIPE, text=True) as holder:
        _refused_while_held(holder, out, capsys)
    assert cli.main(["eval", str(out)]) == 0  # free again


def _refused_while_held(holder, out, capsys):
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        err = cli_error(capsys, "eval", str(out))
        assert f"another aezoo process (pid {holder.pid}) is fitting or evaluating" in err
        err = cli_error(capsys, "fit", "vae", *SMALL, "--epochs", "2", "--out", str(out))
        assert "another aezoo process" in err and snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


def test_ctrl_c_prints_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(ENGINES["svi"]()), "fit", interrupted)
    assert cli.main(["fit", "vae", *SMALL, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert "aezoo: stopped; the run folder keeps its last checkpoint: rerun the same command" in err
    assert "Traceback" not in err


def test_a_diverging_run_is_reported_as_a_failure(tmp_path, capsys):
    err = cli_error(capsys, "fit", "vae", *SMALL, "--lr", "1e6", "--out", str(tmp_path / "run"))
    assert "svi diverged" in err and "Lower the learning rate" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------- kill -9 and resume, per engine family

KILLED = r"""
import sys, torch, pyro
from aezoo.inference import ENGINES
from aezoo.models import MODELS
engine, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
name = "vae" if engine in ("svi", "rws") else "bayesian_ae"
module = MODELS[name]
cfg = module.Config(x_dim=6, z_dim=2, hidden_dims=(4,))
torch.manual_seed(0)
ae = module.build(cfg)
x = torch.bernoulli(torch.rand(100, 6, generator=torch.Generator().manual_seed(1)))
fields = {"svi": dict(epochs=30, batch_size=10), "rws": dict(epochs=30, batch_size=10),
          "nuts": dict(num_samples=15, warmup_steps=15, num_chains=3, max_tree_depth=4),
          "sghmc": dict(num_samples=200, warmup_steps=100, thin=1, batch_size=50, checkpoint_seconds=0.0)}[engine]
fit = ENGINES[engine](progress=False, **fields).fit(ae, x, checkpoint=ckpt)
torch.save({"losses": fit.losses, "samples": fit.samples, "state": ae.state_dict()}, out)
"""


def run_script(tmp_path: Path, *args: str, kill_when: Path | None = None) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, *args], env=env, cwd=tmp_path)
    if kill_when is not None:
        deadline = time.monotonic() + 120
        while not kill_when.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["svi", "rws", "nuts", "sghmc"])
def test_kill_9_then_resume_is_bit_exact(tmp_path, engine):
    assert run_script(tmp_path, engine, str(tmp_path / "a.pt"), str(tmp_path / "whole.pt")) == 0
    ckpt = tmp_path / "b.pt"
    code = run_script(tmp_path, engine, str(ckpt), str(tmp_path / "killed.pt"), kill_when=ckpt)
    assert code == -signal.SIGKILL and not (tmp_path / "killed.pt").exists(), "the run ended before the kill"
    assert run_script(tmp_path, engine, str(ckpt), str(tmp_path / "resumed.pt")) == 0
    whole, resumed = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "resumed.pt")
    assert torch.equal(whole["losses"], resumed["losses"])
    assert all(torch.equal(whole["samples"][k], resumed["samples"][k]) for k in whole["samples"])
    assert all(torch.equal(whole["state"][k], resumed["state"][k]) for k in whole["state"])


# ---------------------------------------------------------------- honest Monte Carlo errors


def test_the_mcse_fails_on_heavy_tails_and_the_lower_bound_holds_for_any_guide(linear_gaussian):
    # q = N(m, s^2 S) for p(z | x) = N(m, S): the weights are Pareto with k = 1 - s^2 (D_z = 2), so
    # s = 0.9 gives k = 0.19 (finite variance) and s = 0.3 gives k = 0.91 (no variance). Seen over 300
    # data with K = 1000: +-2 MCSE covered log p(x) for 95 % and 30 %. The one-sided bound
    # log p_hat - log 20 fails with probability at most 5 % for any guide: at most 15 + 4 sd (= 30) of 300.
    from aezoo.diagnostics import importance_estimate

    ae, x = linear_gaussian(300)
    truth = ae.model.exact_log_marginal(x).detach()
    weight, cov = ae.model.posterior_map()
    coverage = {}
    for s in (0.9, 0.3):
        with torch.no_grad():
            ae.guide.set_(weight, -weight @ ae.model.mu, s * torch.linalg.cholesky(cov))
        est = importance_estimate(ae, x, num_particles=1000)
        coverage[s] = ((est.log_likelihood - truth).abs() <= 2 * est.mcse).double().mean().item()
        assert (truth < est.lower_bound()).sum() <= 30
        assert truth.mean() >= est.to_dict()["log_likelihood_lower_95"]
    assert coverage[0.9] > 0.85 and coverage[0.3] < 0.6, coverage


def test_metrics_say_when_the_mcse_is_unreliable(tmp_path, capsys):
    out = fitted(tmp_path, capsys)  # one epoch on digits: most importance weights are heavy-tailed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_log_likelihood_mcse_reliable"] is (metrics["khat_share_above_0.7"] == 0)
    assert metrics["test_log_likelihood_lower_95"] == pytest.approx(metrics["test_log_likelihood"] - math.log(20) / 20)
    if not metrics["test_log_likelihood_mcse_reliable"]:
        assert "test_log_likelihood_mcse</code> is unreliable" in (out / "report.html").read_text()
