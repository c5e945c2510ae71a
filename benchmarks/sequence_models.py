"""The zoo's sequence models side by side: test bound, imputation and forecast error, seconds per epoch.

What it measures: for each data set in ``--data`` and each model in ``--models`` (``dmm``, ``svae``,
``gp_vae``, ``markov_gp_vae``, ``pv_rnn``, ``koopman_vae``, ``vssm``), all with a Gaussian likelihood,
``z_dim`` latent channels and hidden widths ``--hidden``, over ``--seeds`` seeds:

* **train s/epoch**: the engine's ``train_seconds`` per epoch (``ENGINES["svi"]`` with the model's
  ``DEFAULT_ENGINE`` settings: ``koopman_vae`` trains with its spectral ``koopman`` term).
* **test bound**: the importance-sampled ``log p(x)`` (``K = --particles`` draws of the guide,
  :func:`aezoo.diagnostics.importance_estimate`) of the first ``--test-size`` test sequences, in nats per
  time step (per sequence divided by ``T``). ``pv_rnn``'s guide is not amortized (adaptive vectors per
  training sequence), so it has no test bound without fitting vectors for each test sequence: reported
  as ``null``.
* **imputation MSE**: 50% of the test entries hidden at random (seeded); the mean over those entries of
  ``(x_hat - x)^2``, ``x_hat`` the decoder's mean averaged over 20 draws of the guide given the rest.
* **TimeGAN scores** (on the data sets in ``--scores``, default ``sines``): the discriminative and predictive
  scores of :mod:`aezoo.diagnostics.temporal` for prior samples (decoder means) against the test sequences
  (0 and the real-data forecaster's error are best; the papers' Table 1 reports them for sines).
* **forecast MSE**: the last ``--horizon`` steps hidden; the same mean over them. ``pv_rnn`` forecasts by
  error regression (:func:`aezoo.models.pv_rnn.error_regression` on the visible window, its adaptive
  vectors fitted for 100 steps, the network frozen) and is scored the same way.

Data (standardised windows or generated, ``D_x`` in brackets): ``sines`` (TimeGAN's sines [5], T = 24),
``lds_video`` (a linear dynamical system seen as a 16-pixel video, T = 20), ``weather_field`` (a separable
space-time GP with an advected wave on 25 stations, T = 30), ``sunspots`` (statsmodels, T = 24).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.sequence_models
    .venv/bin/python -m benchmarks.sequence_models --quick

The last line printed is one JSON object with the figures (per model and data: the mean and, with
several seeds, the standard deviation over seeds).

References:
    1. Structured Inference Networks for Nonlinear State Space Models, Krishnan, Shalit & Sontag, arXiv:1609.09869.
    2. GP-VAE: Deep Probabilistic Time Series Imputation, Fortuin et al., arXiv:1907.04155.
    3. Markovian Gaussian Process Variational Autoencoders, Zhu et al., arXiv:2207.05543.
    4. A Novel Predictive-Coding-Inspired Variational RNN Model for Online Prediction and Recognition,
       Ahmadi & Tani, arXiv:1811.01339.
    5. Generative Modeling of Regular and Irregular Time Series Data via Koopman VAEs, Naiman et al.,
       arXiv:2310.02619.
    6. Parallelizing Autoregressive Generation with Variational State Space Models, Lambrechts et al., 2024.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
from torch import Tensor

from aezoo import data
from aezoo.diagnostics import importance_estimate
from aezoo.diagnostics.likelihood import generate, reconstruct
from aezoo.diagnostics.temporal import discriminative_score, predictive_score
from aezoo.inference import ENGINES
from aezoo.models import MODELS, pv_rnn
from benchmarks.common import add_device, device_name

SEQUENCE_MODELS = ("dmm", "svae", "gp_vae", "markov_gp_vae", "pv_rnn", "koopman_vae", "vssm")
DATA = ("sines", "lds_video", "weather_field", "sunspots")


def load(name: str, train_size: int, test_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(train x, test x)``, each ``(N, T, D_x)`` float, fully observed."""
    if name == "lds_video":
        return data.lds_video(train_size, seed=seed, p_missing=0.0, p_missing_frame=0.0).x, \
            data.lds_video(test_size, seed=seed + 1000, p_missing=0.0, p_missing_frame=0.0).x
    ds = data.load(name, "none")  # the first train_size / test_size, or all of a shorter series' windows
    return ds.train[:train_size].float(), ds.test[:test_size].float()


def config(name: str, x_dim: int, T: int, z_dim: int, hidden: int, num_data: int):
    """The model's Config for data of width ``x_dim``: Gaussian likelihood, the given sizes."""
    module = MODELS[name]
    sizes = {
        "dmm": dict(z_dim=z_dim, emission_dim=hidden, transition_dim=hidden, rnn_dim=hidden),
        "svae": dict(z_dim=z_dim, state_dim=z_dim, hidden_dims=(hidden,)),
        "gp_vae": dict(z_dim=z_dim, hidden_dims=(hidden,)),
        "markov_gp_vae": dict(z_dim=z_dim, hidden_dims=(hidden,)),
        "pv_rnn": dict(z_dim=z_dim, hidden_dim=hidden, num_data=num_data, seq_len=T),
        "koopman_vae": dict(z_dim=z_dim, hidden_dim=hidden, hidden_dims=(hidden,)),
        "vssm": dict(z_dim=z_dim, hidden_dim=hidden, state_dim=hidden),
    }[name]
    fields = module.Config.__dataclass_fields__
    if "likelihood" in fields:
        sizes["likelihood"] = "gaussian"
    return module.Config(x_dim=x_dim, **sizes)


def arguments(ae, x: Tensor, mask: Tensor | None) -> tuple:
    """``(x, *covariates)`` in the model's order: the mask, ``index`` as positions, anything else None."""
    given = {"mask": mask, "index": torch.arange(len(x), device=x.device)}
    return (x, *(given.get(name) for name in ae.covariate_names))


@torch.no_grad()
def fill(ae, x: Tensor, mask: Tensor, draws: int = 20) -> Tensor:
    """The decoder's mean averaged over ``draws`` guide draws given the observed entries; observed kept."""
    x_hat = torch.stack([reconstruct(ae, *arguments(ae, x.where(mask, 0.0), mask)) for _ in range(draws)]).mean(0)
    return x.where(mask, x_hat)


def forecast_mse(ae, name: str, x: Tensor, horizon: int, seed: int) -> float:
    """Mean squared error over the last ``horizon`` steps of ``x`` predicted from the others."""
    if name == "pv_rnn":
        prediction, _ = pv_rnn.error_regression(ae, x[:, :-horizon], horizon=horizon, seed=seed)
        return (prediction - x[:, -horizon:]).pow(2).mean().item()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, -horizon:] = False
    return (fill(ae, x, mask) - x)[:, -horizon:].pow(2).mean().item()


def run(name: str, train: Tensor, test: Tensor, args, seed: int, scores: bool = False) -> dict:
    """Fit ``name`` on ``train`` and score it on ``test``: one row of the table."""
    T, x_dim = train.shape[1:]
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    module = MODELS[name]
    ae = module.build(config(name, x_dim, T, args.z_dim, args.hidden, len(train))).to(args.device)
    engine_name, settings = getattr(module, "DEFAULT_ENGINE", ("svi", {}))
    engine = ENGINES[engine_name](**{**settings, "epochs": args.epochs, "batch_size": args.batch_size,
                                     "lr": args.lr, "seed": seed, "progress": False})
    result = engine.fit(ae, *arguments(ae, train, None))
    ae.eval()
    g = torch.Generator().manual_seed(seed)
    test = test.to(args.device)
    hidden = (torch.rand(test.shape, generator=g) < 0.5).to(args.device)
    imputed = None if name == "pv_rnn" else (fill(ae, test, ~hidden) - test)[hidden].pow(2).mean().item()
    row = {"train_s_per_epoch": float(result.stats["train_seconds"]) / args.epochs,
           "final_loss": float(result.losses[-1]),
           "imputation_mse": imputed,
           "forecast_mse": forecast_mse(ae, name, test, args.horizon, seed),
           "test_ll_per_step": None}
    if name != "pv_rnn":
        est = importance_estimate(ae, *arguments(ae, test, None), num_particles=args.particles, batch_size=50)
        row["test_ll_per_step"] = est.log_likelihood.mean().item() / T
    if scores:  # TimeGAN's post-hoc scores of prior samples (decoder means) against the test sequences
        with torch.no_grad():
            fake = generate(ae, *arguments(ae, torch.zeros_like(test), None)).cpu()
        real = test.cpu()
        row["discriminative"] = discriminative_score(real, fake, steps=args.score_steps[0], seed=seed)
        row["predictive"] = predictive_score(real, fake, steps=args.score_steps[1], seed=seed)
    return row


def summary(rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every figure."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        if not values:
            out[key] = None
            continue
        out[key] = round(statistics.fmean(values), 5)
        if len(values) > 1:
            out[key + "_sd"] = round(statistics.stdev(values), 5)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(SEQUENCE_MODELS))
    p.add_argument("--data", default="sines,lds_video,weather_field,sunspots")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--test-size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--z-dim", type=int, default=4)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--horizon", type=int, default=5, help="steps forecast at the end of each test sequence")
    p.add_argument("--particles", type=int, default=100, help="K of the test bound")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--scores", default="sines", help="data sets on which to compute TimeGAN's scores ('' for none)")
    p.add_argument("--quick", action="store_true", help="seconds: 200/50 sequences, 2 epochs, K = 10")
    add_device(p)
    args = p.parse_args(argv)
    args.score_steps = (2000, 5000)  # TimeGAN's classifier and forecaster training steps
    if args.quick:
        args.train_size, args.test_size, args.epochs, args.particles = 200, 50, 2, 10
        args.score_steps = (200, 500)
    score_sets = {d for d in args.scores.split(",") if d}
    names = [m for m in args.models.split(",") if m]
    sets = [d for d in args.data.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",")]
    unknown = [m for m in names if m not in SEQUENCE_MODELS] + [d for d in sets if d not in DATA]
    if unknown:
        p.error(f"unknown {unknown}; models: {SEQUENCE_MODELS}, data: {DATA}")

    pyro.settings.set(module_local_params=True)
    t_start = time.perf_counter()
    table: dict[str, dict[str, dict]] = {}
    for d in sets:
        train, test = load(d, args.train_size, args.test_size, 0)
        table[d] = {}
        for name in names:
            table[d][name] = summary([run(name, train, test, args, seed, d in score_sets) for seed in seeds])
            print(f"{d} {name}: {table[d][name]}", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - t_start

    def fmt(v, digits=4):
        return "n/a" if v is None else f"{v:.{digits}f}"

    print(f"sequence_models: {args.train_size} train / {args.test_size} test sequences, {args.epochs} epochs, "
          f"batch {args.batch_size}, z_dim {args.z_dim}, hidden {args.hidden}, seeds {seeds}, "
          f"{torch.get_num_threads()} threads, {platform.machine()} CPU")
    print(f"{'data':>14} {'model':>14} {'log p(x)/step':>14} {'impute MSE':>11} {'forecast MSE':>13} {'s/epoch':>8} "
          f"{'disc.':>6} {'pred.':>6}")
    for d, rows in table.items():
        for name, r in rows.items():
            print(f"{d:>14} {name:>14} {fmt(r['test_ll_per_step'], 3):>14} {fmt(r['imputation_mse']):>11} "
                  f"{fmt(r['forecast_mse']):>13} {fmt(r['train_s_per_epoch'], 2):>8} "
                  f"{fmt(r.get('discriminative'), 3):>6} {fmt(r.get('predictive'), 3):>6}")
    print(f"time: total {total_s:.0f} s")
    result = {"benchmark": "sequence_models", "table": table, "train_size": args.train_size,
              "test_size": args.test_size, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "z_dim": args.z_dim, "hidden": args.hidden, "horizon": args.horizon, "particles": args.particles,
              "seeds": seeds, "seconds": round(total_s, 1), "device": device_name(args.device),
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
