"""MNIST quadrant prediction: the conditional log-likelihood of the unseen quadrants, baseline regressor vs CVAE.

The structured-output task of Sohn, Lee & Yan (2015) as set up by Pyro's CVAE example
(``examples/cvae``): with 1 quadrant seen (bottom-left) or 3 seen (all but bottom-right), predict
the rest of the digit. For each setting

- **NN (baseline)**: a deterministic MLP ``c -> 784`` (the hidden sizes of the CVAE, ReLU), trained
  on the masked Bernoulli negative log-likelihood of the unseen pixels; its test NLL is exact;
- **CVAE**: ``cvae`` with ``condition="c"`` trained with its default hybrid objective (``svi`` with
  the ``gsnn`` term, alpha = 0.5); the test conditional log-likelihood ``log p(x_unseen | c)`` is
  estimated by importance sampling with the recognition network as proposal (``--num-particles``
  per image), beside its ELBO (Pyro's table reports this Monte Carlo bound as "CVAE (Monte Carlo)").

Figures are negative conditional log-likelihoods in nats per image (summed over the unseen
pixels). Pyro's example trains on grey-level targets (BCE against pixel intensities) for up to
50 epochs with early stopping; here the targets are binarized (dynamic on train, fixed on test)
because the zoo's Bernoulli likelihood takes binary data, so the numbers are beside Pyro's,
not the same quantity. The CVAE does not use the baseline's prediction as its prior input
(Sohn et al.'s and Pyro's "initial guess"); its prior network sees ``c`` alone.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.cvae_quadrants [--epochs 10] [--test-size 2000]``.
The last line printed is one JSON object with the figures.

References:
    1. Learning Structured Output Representation using Deep Conditional Generative Models, Sohn,
       Lee & Yan, NeurIPS 2015.
    2. Pyro's CVAE example and tutorial (pyro.ai/examples/cvae.html), its table of conditional
       log-likelihoods.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
import torch.nn.functional as F

from aezoo import data
from aezoo.diagnostics import importance_estimate
from aezoo.inference import ENGINES
from aezoo.models import cvae
from aezoo.nn import MLP
from benchmarks.common import add_device, device_name

PYRO_TABLE = {  # Pyro's CVAE tutorial, negative CLL in nats per image (grey-level targets)
    1: {"baseline": 100.4, "cvae": 71.8},
    2: {"baseline": 61.9, "cvae": 51.0},
    3: {"baseline": 25.4, "cvae": 24.2},
}


def train_baseline(train, hidden, epochs: int, lr: float, batch_size: int, seed: int):
    """The masked-BCE regressor ``c -> logits (784)``; returns it with its seconds of training."""
    x, c, mask = train
    torch.manual_seed(seed)
    net = MLP(c.shape[-1], hidden, x.shape[-1], "relu").to(x.device)
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(batch_size):
            target = data.dynamic_binarize(x[idx])
            nll = F.binary_cross_entropy_with_logits(net(c[idx]), target, reduction="none")
            loss = (nll * mask[idx]).sum(-1).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
    return net, time.perf_counter() - start


def baseline_nll(net, test) -> torch.Tensor:
    x, c, mask = test
    with torch.no_grad():
        return (F.binary_cross_entropy_with_logits(net(c), x, reduction="none") * mask).sum(-1).cpu()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quadrants", default="1,3", help="numbers of seen quadrants, e.g. 1,2,3")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--z-dim", type=int, default=200)
    p.add_argument("--hidden", default="500,500")
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--num-particles", type=int, default=500, help="importance samples per test image")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    pyro.settings.set(module_local_params=True)
    hidden = tuple(int(h) for h in args.hidden.split(","))

    rows = {}
    for q in (int(v) for v in args.quadrants.split(",")):
        ds = data.load(f"mnist_q{q}", "dynamic", args.train_size, args.test_size)
        names = ("y", "c", "mask")
        train, test = ds.arrays("train", names), ds.arrays("test", names)
        net, base_s = train_baseline(tuple(train[i].to(args.device) for i in (0, 2, 3)), hidden, args.epochs, args.lr,
                                     args.batch_size, args.seed)
        base = baseline_nll(net, tuple(test[i].to(args.device) for i in (0, 2, 3)))
        cfg = cvae.Config(condition="c", z_dim=args.z_dim, hidden_dims=hidden)
        pyro.set_rng_seed(args.seed)
        ae = cvae.build(cfg).to(args.device)
        engine_name, fields = cvae.DEFAULT_ENGINE
        engine = ENGINES[engine_name](**fields, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                      seed=args.seed, progress=False)
        fit = engine.fit(ae, *train, transform=ds.transform)
        ae.eval()
        start = time.perf_counter()
        est = importance_estimate(ae, *test, num_particles=args.num_particles)
        eval_s = time.perf_counter() - start
        n = len(base)
        gap = -est.log_likelihood - base  # paired, per image
        rows[q] = {
            "baseline_nll": base.mean().item(), "baseline_nll_se": (base.std() / n**0.5).item(),
            "cvae_nll": -est.log_likelihood.mean().item(), "cvae_nll_se": (est.log_likelihood.std() / n**0.5).item(),
            "cvae_nll_mcse": (est.mcse.pow(2).sum().sqrt() / n).item(), "cvae_neg_elbo": -est.elbo.mean().item(),
            "cvae_minus_baseline": gap.mean().item(), "cvae_minus_baseline_se": (gap.std() / n**0.5).item(),
            "pyro_baseline_nll": PYRO_TABLE[q]["baseline"], "pyro_cvae_nll": PYRO_TABLE[q]["cvae"],
            "unseen_pixels": int(test[3][0].sum()), "baseline_train_seconds": base_s,
            "cvae_train_seconds": fit.stats["train_seconds"].item(), "cvae_eval_seconds": eval_s,
            "final_train_loss": fit.losses[-1].item(),
        }

    print(f"negative conditional log-likelihood of the unseen quadrants, nats per image ({args.epochs} epochs, "
          f"{args.test_size} test images, K={args.num_particles}; Pyro: grey-level targets)")
    print(f"{'seen':>4s} {'baseline':>16s} {'CVAE (IS)':>16s} {'CVAE -ELBO':>10s} {'CVAE-base':>14s} "
          f"{'Pyro base':>9s} {'Pyro CVAE':>9s}")
    for q, r in rows.items():
        print(f"{q:4d} {r['baseline_nll']:9.2f} +- {r['baseline_nll_se']:.2f} {r['cvae_nll']:9.2f} +- "
              f"{r['cvae_nll_se']:.2f} {r['cvae_neg_elbo']:10.2f} {r['cvae_minus_baseline']:7.2f} +- "
              f"{r['cvae_minus_baseline_se']:.2f} {r['pyro_baseline_nll']:9.1f} {r['pyro_cvae_nll']:9.1f}")
    result = {"benchmark": "cvae_quadrants", "epochs": args.epochs, "num_particles": args.num_particles,
              "num_test": args.test_size, "z_dim": args.z_dim, "hidden": list(hidden),
              "results": {str(q): r for q, r in rows.items()}, "device": device_name(args.device),
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
