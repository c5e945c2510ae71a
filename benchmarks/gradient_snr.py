"""Encoder and decoder gradient signal-to-noise ratio versus K for IWAE-standard, STL and DReG on MNIST.

What it measures: Rainforth et al. (2018) show that for the IWAE bound with the standard
(reparameterised) gradient, the signal-to-noise ratio of the inference network's (encoder's)
gradient falls as the number of particles ``K`` grows (like ``O(1/sqrt(K))``) while the generative
network's (decoder's) rises (like ``O(sqrt(K))``); Tucker et al. (2018) show that the
doubly-reparameterised estimator (DReG) removes the encoder's decline. This benchmark trains the
VAE of :mod:`aezoo.models.vae` (784-200-200-50 tanh, Bernoulli) briefly with ``ENGINES["iwae"]``
(K = 5, standard; by default 10 epochs of 10,000 images, about 140 nats, far from converged: the
figures describe that model) on the first ``--train-size`` dynamically binarized MNIST images, then
freezes the weights and a minibatch ``x`` of ``--batch`` (statically binarized) test images. For
each estimator (``standard``, ``stl``, ``dreg``) and each ``K`` it draws ``--repeats`` independent
gradients of ``IWAE(num_particles=K, estimator=...).loss(ae, x, num_data=len(x))`` with respect to
the guide's (encoder) and the model's (decoder) parameters. Per scalar parameter, SNR =
``|mean| / std`` over the draws (std with Bessel's correction); the figure reported per group is the
mean SNR over the group's parameters (parameters whose gradient has zero spread are left out), as
in Rainforth et al.'s figures. The model gradient is the same for all three estimators, and each K
uses the same random seed for every estimator (common random numbers: the same particles), so the
three decoder columns agree exactly and the encoder columns compare paired draws.

The goal is the direction, not the papers' numbers: encoder SNR of ``standard`` at the largest K
below its value at K = 1, and ``dreg``'s not falling (at the largest K at least its value at
K = 1). The script states what it observed either way, with the ratio (largest K) / (K = 1).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.gradient_snr              # K = 1,4,16,64; R = 200
    .venv/bin/python benchmarks/gradient_snr.py --ks 1,8,64 --repeats 200 --train-epochs 2

The last line printed is one JSON object with the figures. Pyro's settings are left at their
defaults except ``module_local_params=True``, as in the CLI.

References:
    Tighter Variational Bounds are Not Necessarily Better, Rainforth, Kosiorek, Le, Maddison,
    Igl, Wood & Teh, arXiv:1802.04537.
    Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, Tucker, Lawson, Gu &
    Maddison, arXiv:1810.04152.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
from torch import Tensor

from aezoo.data import load
from aezoo.inference import ENGINES
from aezoo.models import vae
from benchmarks.common import add_device, device_name

ESTIMATORS = ("standard", "stl", "dreg")


def flat_grad(params: list[torch.nn.Parameter]) -> Tensor:
    """The gradients of ``params`` as one float64 vector (zeros where a parameter got none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]).double()


def mean_snr(total: Tensor, total_sq: Tensor, r: int) -> float:
    """Mean over parameters of ``|mean| / std`` from the sums of ``r`` draws and of their squares."""
    mean = total / r
    var = (total_sq - r * mean**2).clamp_min(0) / (r - 1)
    std = var.sqrt()
    keep = std > 1e-12 * (mean.abs() + 1e-30)  # leave out parameters whose gradient does not vary
    return (mean.abs()[keep] / std[keep]).mean().item()


def gradient_snr(ae, x: Tensor, k: int, estimator: str, repeats: int, seed: int) -> tuple[float, float]:
    """``(encoder SNR, decoder SNR)`` of ``estimator`` at ``K = k`` from ``repeats`` gradient draws."""
    engine = ENGINES["iwae"](num_particles=k, estimator=estimator, progress=False)
    groups = (list(ae.guide.parameters()), list(ae.model.parameters()))
    sums = [torch.zeros(sum(p.numel() for p in g), dtype=torch.float64, device=x.device) for g in groups]
    sums_sq = [torch.zeros_like(s) for s in sums]
    pyro.set_rng_seed(seed)
    with torch.enable_grad():
        for _ in range(repeats):
            ae.zero_grad(set_to_none=True)
            engine.loss(ae, x, num_data=len(x)).backward()
            for g, s, s2 in zip(groups, sums, sums_sq):
                v = flat_grad(g)
                s += v
                s2 += v * v
    ae.zero_grad(set_to_none=True)
    enc, dec = (mean_snr(s, s2, repeats) for s, s2 in zip(sums, sums_sq))
    return enc, dec


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="1,4,16,64", help="comma-separated particle counts K")
    p.add_argument("--repeats", type=int, default=200, help="gradient draws R per estimator and K")
    p.add_argument("--batch", type=int, default=64, help="test images in the frozen minibatch")
    p.add_argument("--train-size", type=int, default=10_000, help="MNIST training images for the brief training")
    p.add_argument("--train-epochs", type=int, default=10, help="epochs of IWAE (K=5) training first; 0 = untrained")
    p.add_argument("--estimators", default=",".join(ESTIMATORS))
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    ks = [int(k) for k in args.ks.split(",")]
    estimators = args.estimators.split(",")
    if args.repeats < 2:
        p.error("--repeats must be at least 2")

    pyro.settings.set(module_local_params=True)
    t_start = time.perf_counter()
    ds = load("mnist", "dynamic", train_size=args.train_size, test_size=args.batch)
    torch.manual_seed(args.seed)
    ae = vae.build(vae.Config()).to(args.device)
    train_loss = None
    if args.train_epochs > 0:
        fit = ENGINES["iwae"](num_particles=5, epochs=args.train_epochs, seed=args.seed, progress=False)
        train_loss = fit.fit(ae, ds.train, transform=ds.transform).losses[-1].item()
    t_train = time.perf_counter() - t_start
    x = ds.test[: args.batch].to(args.device)  # statically binarized: the same frozen minibatch on every run

    enc = {e: [] for e in estimators}
    dec = {e: [] for e in estimators}
    seconds = {e: [] for e in estimators}
    for e in estimators:
        for i, k in enumerate(ks):
            t0 = time.perf_counter()
            s_enc, s_dec = gradient_snr(ae, x, k, e, args.repeats, seed=args.seed + 1000 + i)
            seconds[e].append(time.perf_counter() - t0)
            enc[e].append(s_enc)
            dec[e].append(s_dec)
    total_s = time.perf_counter() - t_start

    print(f"gradient_snr: VAE 784-200-200-50 tanh bernoulli, trained {args.train_epochs} epoch(s) of IWAE K=5 on "
          f"{args.train_size} MNIST images" + (f" (last epoch loss {train_loss:.2f} nats)" if train_loss else "")
          + f"; frozen batch of {args.batch} test images; R = {args.repeats} draws; "
          f"{torch.get_num_threads()} threads")
    print(f"{'estimator':>9} {'K':>4} {'encoder SNR':>12} {'decoder SNR':>12} {'seconds':>8}")
    for e in estimators:
        for i, k in enumerate(ks):
            print(f"{e:>9} {k:>4} {enc[e][i]:12.4f} {dec[e][i]:12.4f} {seconds[e][i]:8.1f}")
    print(f"time: training {t_train:.0f} s, total {total_s:.0f} s")

    lo, hi = ks.index(min(ks)), ks.index(max(ks))
    direction = {}

    def report(key: str, label: str, col: list[float], ok: bool, yes: str, no: str) -> None:
        direction[key] = ok
        print(f"{label} SNR K={ks[lo]} -> K={ks[hi]}: {col[lo]:.4f} -> {col[hi]:.4f}, x{col[hi] / col[lo]:.2f} "
              f"({yes if ok else no})")

    if "standard" in enc and lo != hi:
        e, d = enc["standard"], dec["standard"]
        report("standard_encoder_falls", "standard encoder", e, e[hi] < e[lo],
               "falls, as Rainforth et al. report", "does NOT fall")
        report("standard_decoder_rises", "decoder", d, d[hi] > d[lo], "rises, as Rainforth et al. report",
               "does NOT rise")
    if "dreg" in enc and lo != hi:
        e = enc["dreg"]
        report("dreg_encoder_not_falling", "dreg encoder", e, e[hi] >= e[lo],
               "does not fall, as Tucker et al. report", "FALLS: Tucker et al.'s direction not reproduced")

    result = {
        "benchmark": "gradient_snr",
        "ks": ks,
        "encoder_snr": {e: [round(v, 5) for v in enc[e]] for e in estimators},
        "decoder_snr": {e: [round(v, 5) for v in dec[e]] for e in estimators},
        "direction": direction,
        "repeats": args.repeats, "batch": args.batch, "train_epochs": args.train_epochs,
        "train_size": args.train_size, "train_loss": None if train_loss is None else round(train_loss, 3),
        "seconds": round(total_s, 1), "seed": args.seed, "device": device_name(args.device),
        "torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
