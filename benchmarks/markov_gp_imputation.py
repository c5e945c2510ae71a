"""Imputation with the Markovian GP-VAE and its dense-GP peer on Healing MNIST and a weather-like field.

What it measures, after "Markovian Gaussian Process Variational Autoencoders" (Zhu et al.,
arXiv:2207.05543; its Healing MNIST and spatiotemporal experiments) and "GP-VAE: Deep Probabilistic
Time Series Imputation" (Fortuin, Baranchuk, Raetsch & Mandt, arXiv:1907.04155; the Healing MNIST
recipe and metrics): ``markov_gp_vae`` (Matern-3/2 state-space GP prior, Kalman-smoothing guide,
``O(T)``) against ``gp_vae`` (dense Cauchy-kernel GP prior, banded-precision guide, ``O(T^3)``), both
fitted with ``ENGINES["svi"]`` (beta 0.8 as the paper's HMNIST runs) and a Gaussian likelihood, on

* ``healing_mnist`` (:func:`aezoo.data.healing_mnist`: ``T = 10`` frames of a digit rotating at a
  random speed from a random start angle, noise 0.1, 60% of the pixels missing at random), and
* ``weather_field`` (:func:`aezoo.data.weather.weather_field`: 25 stations, ``T = 30`` days, a
  separable space-time GP plus an advected wave, noise 0.1, 50% missing).

Metrics on the *missing* entries of the test set, against the noise-free truth: **MSE** of the
posterior predictive mean (:func:`aezoo.sequence.impute`, 20 draws of ``z`` from the guide's
posterior) and the **Gaussian predictive NLL** ``-log (1/S) sum_s N(truth | mu_s, sigma^2)`` in nats
per entry (``mu_s`` the decoder mean at draw ``s``, ``sigma`` the learned per-dimension scale). On
HMNIST the paper's Bernoulli NLL of the imputed grey levels is printed too (see
benchmarks/healing_mnist.py for the full comparison there). Mean imputation (per-dimension mean of
the observed training values) is the floor any model should beat. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
from torch import Tensor

from aezoo.data import healing_mnist
from aezoo.data.weather import weather_field
from aezoo.inference import ENGINES
from aezoo.models import gp_vae, markov_gp_vae
from benchmarks.healing_mnist import bernoulli_nll

MODELS = ("gp_vae", "markov_gp_vae")


def build(name: str, x_dim: int, z_dim: int, hidden: tuple[int, ...], lengthscale: float):
    common = {"x_dim": x_dim, "z_dim": z_dim, "hidden_dims": hidden, "likelihood": "gaussian"}
    if name == "gp_vae":
        ae = gp_vae.build(gp_vae.Config(kernel="cauchy", lengthscale=lengthscale, variance=1.0, **common))
    elif name == "markov_gp_vae":
        ae = markov_gp_vae.build(markov_gp_vae.Config(nu=1.5, lengthscale=lengthscale, variance=1.0, **common))
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    with torch.no_grad():
        ae.model.scale_raw.fill_(-2.0)  # softplus(-2) = 0.13, about the noise level of both data sets
    return ae


@torch.no_grad()
def predictive(ae, x: Tensor, mask: Tensor, truth: Tensor, num_samples: int = 20, chunk: int = 100):
    """``(mean, nll)`` ``(B, T, D_x)``: the predictive mean and ``-log (1/S) sum_s p(truth | z_s)`` per entry."""
    ae.eval()
    means, nlls = [], []
    for i in range(0, len(x), chunk):
        z = ae.guide.posterior(x[i:i + chunk], mask[i:i + chunk]).rsample((num_samples,))
        d = ae.model.x_dist(z)
        while hasattr(d, "base_dist"):
            d = d.base_dist
        lp = d.log_prob(truth[i:i + chunk].expand_as(d.mean))  # (S, b, T, D_x)
        means.append(d.mean.mean(0))
        nlls.append(-(lp.logsumexp(0) - math.log(num_samples)))
    return torch.cat(means), torch.cat(nlls)


def run_dataset(key: str, train, test, args, hidden, z_dim, lengthscale, epochs) -> dict:
    miss = ~test.mask
    m = train.mask.reshape(-1, train.x.shape[-1])
    col_mean = (train.x.reshape(-1, train.x.shape[-1]) * m).sum(0) / m.sum(0).clamp(min=1)
    rows = {"mean": {"mse": (col_mean.expand_as(test.truth) - test.truth)[miss].pow(2).mean().item()}}
    engine = ENGINES["svi"](epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, beta=0.8,
                            kl_warmup_epochs=min(2, epochs), progress=False)
    for name in MODELS:
        torch.manual_seed(args.seed)
        ae = build(name, train.x.shape[-1], z_dim, hidden, lengthscale)
        start = time.perf_counter()
        fit = engine.fit(ae, train.x, train.mask)
        torch.manual_seed(args.seed)
        mean, nll = predictive(ae, test.x, test.mask, test.truth)
        row = {"mse": (mean - test.truth)[miss].pow(2).mean().item(), "gauss_nll": nll[miss].mean().item(),
               "seconds": time.perf_counter() - start, "final_loss": float(fit.losses[-1])}
        if key == "healing_mnist":
            row["bernoulli_nll"] = bernoulli_nll(mean.clamp(0, 1), test.truth)[miss].mean().item()
        rows[name] = row
        print(f"{key} {name}: {row}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hmnist-train", type=int, default=1000)
    p.add_argument("--weather-train", type=int, default=500)
    p.add_argument("--test-size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=5, help="HMNIST epochs (the weather field gets 2x as many)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke-sized run")
    args = p.parse_args(argv)
    if args.quick:
        args.hmnist_train, args.weather_train, args.test_size, args.epochs = 64, 64, 20, 1
    torch.set_num_threads(1)
    pyro.set_rng_seed(args.seed)
    t0 = time.perf_counter()
    result = {"benchmark": "markov_gp_imputation", "args": vars(args)}
    with pyro.settings.context(module_local_params=True):
        weather = weather_field(args.weather_train + args.test_size, seed=args.seed)
        n = args.weather_train
        split = [type(weather)(weather.x[s], weather.mask[s], truth=weather.truth[s]) for s in (slice(0, n),
                                                                                             slice(n, None))]
        result["weather_field"] = run_dataset("weather_field", *split, args, (32,), 4, 5.0, 2 * args.epochs)
        try:
            train, test = healing_mnist("train", n=args.hmnist_train), healing_mnist("test", n=args.test_size)
            result["healing_mnist"] = run_dataset("healing_mnist", train, test, args, (256,), 8, 2.0, args.epochs)
        except FileNotFoundError as err:
            result["healing_mnist"] = {"skipped": str(err)}
    result["seconds"] = time.perf_counter() - t0
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
