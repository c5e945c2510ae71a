"""SGP-BAE against the plain Bayesian AE (no GP prior) on rotated MNIST and a moving-ball video, at a CPU budget.

What it measures, after "Fully Bayesian Autoencoders with Latent Sparse Gaussian Processes"
(Tran, Shahbaba, Mandt & Filippone, arXiv:2302.04534; the paper's ``bae`` is its baseline without
the GP prior, as here), both models sampled with ``ENGINES["sghmc"]`` (same steps, seed, networks):

* **rotated MNIST** (:mod:`aezoo.data.rotated`, digit 3, static binarisation, angle ``c``): test
  reconstruction error, the mean over pixels of ``(E[x | x*] - x*)^2`` (posterior predictive mean,
  :func:`aezoo.models.bayesian_ae.predict`), the predictive NLL ``-log p(x* | x*, data)`` in nats
  per image, and for ``sgp_bae`` the ``R^2`` of the test codes against the GP mean of their angle,
  per posterior draw.
* **moving ball** (generated here, as the moving-ball videos of GPPVAE / Pearce's GP-VAE): one
  seeded video of ``T`` frames, ``16 x 16``, a Gaussian-blob ball bouncing inside the frame;
  ``sgp_bae`` (and ``sgp_bae_joint``, the same without the ``-log q`` term) has an RBF GP prior
  over the frame time ``c = t``. Metric: trajectory recovery, the mean squared error (pixels^2)
  of the best affine map from the 2-D codes to the true ball position (scikit-learn
  ``LinearRegression``) fitted on the training frames and scored on every 4th (held-out) frame,
  the paper's trajectory figure in a form that needs no GP regression.

Scaled far down from [1] (its MNIST runs use conv nets and many thousands of SGHMC steps). Last
line: one JSON object with every number. ``--quick`` runs a smoke-sized version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import pyro
import torch
from pyro import poutine
from sklearn.linear_model import LinearRegression

from aezoo import data
from aezoo.core import flatten_draws
from aezoo.inference import ENGINES
from aezoo.models import bayesian_ae, sgp_bae


def moving_ball(T: int = 80, side: int = 16, radius: float = 1.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frames (T, side^2) in [0, 1], positions (T, 2))``: a blob bouncing at constant speed, seeded."""
    g = torch.Generator().manual_seed(seed)
    pos = radius + (side - 1 - 2 * radius) * torch.rand(2, generator=g)
    angle = 2 * math.pi * torch.rand((), generator=g)
    vel = 0.8 * torch.stack([angle.cos(), angle.sin()])
    lo, hi = radius, side - 1 - radius
    track = []
    for _ in range(T):
        track.append(pos.clone())
        pos = pos + vel
        for d in range(2):  # reflect at the walls
            if pos[d] < lo or pos[d] > hi:
                vel[d] = -vel[d]
                pos[d] = 2 * (lo if pos[d] < lo else hi) - pos[d]
    positions = torch.stack(track)
    yy, xx = torch.meshgrid(torch.arange(float(side)), torch.arange(float(side)), indexing="ij")
    grid = torch.stack([yy.reshape(-1), xx.reshape(-1)], -1)  # (side^2, 2)
    frames = torch.exp(-0.5 * ((grid[None] - positions[:, None]) ** 2).sum(-1) / radius**2)
    return frames, positions


def sghmc(args, steps: int):
    return ENGINES["sghmc"](lr=args.lr, num_samples=args.samples, warmup_steps=steps, thin=5, num_chains=1,
                            batch_size=args.batch_size, progress=False, seed=args.seed)


NAMES = ("bae", "sgp_bae", "sgp_bae_joint")  # sgp_bae_joint: Config(code_entropy=False), no -log q term


def fit(name: str, cfg, engine, x, c):
    torch.manual_seed(0)
    if name.startswith("sgp_bae"):
        ae = sgp_bae.build(dataclasses.replace(cfg, code_entropy=name == "sgp_bae"))
        return ae, engine.fit(ae, x, c).samples
    fields = {k: getattr(cfg, k) for k in ("x_dim", "z_dim", "hidden_dims", "likelihood", "gaussian_scale")}
    ae = bayesian_ae.build(bayesian_ae.Config(**fields))
    return ae, engine.fit(ae, x).samples


def codes_of(name, ae, samples, x):
    fn = sgp_bae.latent_codes if name.startswith("sgp_bae") else bayesian_ae.latent_codes
    return fn(ae, samples, x, num_draws=20)


@torch.no_grad()
def gp_r2(ae, samples, x, c) -> float:
    """R^2 of each draw's codes E[z | x] of ``x`` against that draw's GP mean at ``c``, averaged over 10 draws."""
    flat = flatten_draws(samples)
    out = []
    for i in range(0, len(flat["u"]), max(1, len(flat["u"]) // 10)):
        draw = {k: v[i] for k, v in flat.items()}
        with poutine.condition(data=draw):
            z = ae.model.code_dist(x).mean
            mean = ae.model.prior.z_dist(draw["u"], c.reshape(len(c), -1), ae.model.u_tril()).mean
        out.append(1 - ((z - mean) ** 2).sum() / ((z - z.mean(0)) ** 2).sum())
    return torch.stack(out).mean().item()


def rotated_mnist(args) -> dict:
    ds = data.load("rotated_mnist", "static", train_size=args.train_size, test_size=args.test_size)
    x, c = ds.arrays("train", ("c",))
    xt, ct = ds.test, ds.test_covariates["c"]
    cfg = sgp_bae.Config(z_dim=2, hidden_dims=(32,), num_inducing=8)
    out = {}
    for name in NAMES:
        start = time.perf_counter()
        ae, samples = fit(name, cfg, sghmc(args, args.warmup), x, c)
        cov = (ct,) if name.startswith("sgp_bae") else ()
        mean, _, log_p = bayesian_ae.predict(ae, samples, xt, num_draws=20, covariates=cov)
        row = {"test_mse": ((mean - xt) ** 2).mean().item(), "test_nll": -log_p.mean().item(),
               "seconds": time.perf_counter() - start}
        if name.startswith("sgp_bae"):
            row["code_r2_vs_gp"] = gp_r2(ae, samples, xt, ct)
        out[name] = row
    return out


def ball(args) -> dict:
    frames, positions = moving_ball(args.frames, seed=args.seed)
    t = torch.arange(len(frames), dtype=torch.get_default_dtype())
    test = t % 4 == 3
    cfg = sgp_bae.Config(x_dim=frames.shape[1], z_dim=2, hidden_dims=(64,), likelihood="gaussian",
                         gaussian_scale=0.1, kernel="rbf", lengthscale=5.0, covariate_range=(0.0, float(len(t))),
                         num_inducing=max(4, len(t) // 5), inducing_scale=1.0, noise=0.01)
    out = {}
    for name in NAMES:
        start = time.perf_counter()
        ae, samples = fit(name, cfg, sghmc(args, args.warmup), frames[~test], t[~test])
        z_train, z_test = (codes_of(name, ae, samples, frames[m]) for m in (~test, test))
        reg = LinearRegression().fit(z_train.numpy(), positions[~test].numpy())
        err = ((torch.as_tensor(reg.predict(z_test.numpy())) - positions[test]) ** 2).sum(-1).mean().item()
        out[name] = {"trajectory_mse_px2": err, "seconds": time.perf_counter() - start}
    out["position_variance_px2"] = positions[test].var(0).sum().item()  # the error of predicting the mean
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=300)
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--warmup", type=int, default=600, help="SGHMC burn-in steps")
    p.add_argument("--samples", type=int, default=20, help="draws kept (thin 5)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke-sized run")
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.frames, args.warmup, args.samples = 100, 50, 40, 100, 10
    torch.set_num_threads(1)
    pyro.set_rng_seed(args.seed)
    with pyro.settings.context(module_local_params=True):
        result = {"args": vars(args), "moving_ball": ball(args)}
        try:
            result["rotated_mnist"] = rotated_mnist(args)
        except FileNotFoundError as err:
            result["rotated_mnist"] = {"skipped": str(err)}
    for key in ("moving_ball", "rotated_mnist"):
        print(key, json.dumps(result[key]))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
