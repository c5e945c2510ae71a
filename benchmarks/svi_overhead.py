"""Seconds per epoch of aezoo's SVI engine versus a hand-written PyTorch loop for the same VAE.

What it measures: wall-clock seconds of one training epoch of ``ENGINES["svi"].fit`` (Pyro's
``TraceMeanField_ELBO``, analytic KL) against a plain-PyTorch loop that trains the identical VAE:
the same ``aezoo.nn.MLP`` encoder and decoder with the same initial weights, softplus scale,
Bernoulli likelihood (``binary_cross_entropy_with_logits`` summed), closed-form Gaussian KL, Adam
and learning rate, batch size and minibatch order, on the same data. The two run alternately (aezoo
epoch, plain epoch, ...) so machine noise hits both alike; each timed aezoo epoch is one
``fit(epochs=1)`` call, which builds a fresh Adam (the plain loop does the same), timed whole: its
setup (a check of all the data and one warm-up forward pass) is about 4% of a 10,000-point epoch.
The figures are the median seconds per epoch of each and the median over rounds of the ratio aezoo
/ plain (paired, so a burst of load that slows one round does not skew it); the goal is a ratio of
at most 1.10 (Pyro's bookkeeping costs under 10% over the hand-written loop). Pyro's settings are
left at their defaults (validation on) except ``module_local_params=True``, as in the CLI.

Run from the repository root::

    .venv/bin/python -m benchmarks.svi_overhead                  # 10,000 random binary vectors, 5 rounds
    .venv/bin/python benchmarks/svi_overhead.py --data mnist --n 60000 --repeats 3

The last line printed is one JSON object with the figures. Threads are PyTorch's default; on a
shared machine ``OMP_NUM_THREADS=1`` gives steadier figures (an idle-waiting worker thread
stalls every op, and aezoo issues more small ops per step than the plain loop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aezoo.inference import ENGINES
from aezoo.models import vae
from aezoo.nn import MLP

GOAL_RATIO = 1.10


class PlainVAE(nn.Module):
    """The VAE of ``aezoo.models.vae`` (Bernoulli likelihood) written as plain PyTorch."""

    def __init__(self, cfg: vae.Config, min_scale: float = 1e-5) -> None:
        super().__init__()
        self.encoder = MLP(cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation)
        self.decoder = MLP(cfg.z_dim, cfg.hidden_dims[::-1], cfg.x_dim, cfg.activation)
        self.min_scale = min_scale

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO per datum, averaged over the minibatch ``x`` ``(B, D_x)``; analytic KL."""
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        z = loc + scale * torch.randn_like(loc)
        nll = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1)
        return (nll + kl).mean()


def plain_epoch(net: PlainVAE, x: Tensor, batch_size: int, lr: float, seed: int) -> float:
    """One epoch mirroring ``GradientEngine.fit(epochs=1)``; returns the mean loss (nats per datum)."""
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    total = 0.0
    for idx in torch.randperm(len(x), generator=order).split(batch_size):
        loss = net.loss(x[idx])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        total += loss.item() * len(idx)
    return total / len(x)


def load_x(kind: str, cfg: vae.Config, n: int) -> Tensor:
    """``(n, D_x)`` binary data: draws of a randomly initialised VAE, or statically binarized MNIST."""
    if kind == "mnist":
        from aezoo.data import load

        return load("mnist", binarization="static", train_size=n).train
    return vae.example_data(cfg, n, seed=0)[0]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("random", "mnist"), default="random")
    p.add_argument("--n", type=int, default=10_000, help="data points")
    p.add_argument("--repeats", "--epochs", type=int, default=5, help="alternations (epochs of each)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--z-dim", type=int, default=vae.Config.z_dim)
    p.add_argument("--hidden-dims", default=",".join(map(str, vae.Config.hidden_dims)))
    args = p.parse_args(argv)

    pyro.settings.set(module_local_params=True)
    hidden = tuple(int(h) for h in args.hidden_dims.split(","))
    cfg = vae.Config(z_dim=args.z_dim, hidden_dims=hidden)
    x = load_x(args.data, cfg, args.n)
    torch.manual_seed(0)
    ae = vae.build(cfg)
    plain = PlainVAE(cfg, min_scale=ae.guide.min_scale)
    plain.encoder.load_state_dict(ae.guide.encoder.state_dict())
    plain.decoder.load_state_dict(ae.model.decoder.state_dict())

    def engine(seed: int):
        return ENGINES["svi"](epochs=1, batch_size=args.batch_size, lr=args.lr, seed=seed, progress=False)

    warm = x[: 10 * args.batch_size]  # untimed warm-up: torch's lazy imports (Adam loads torch._dynamo)
    engine(args.repeats).fit(ae, warm)
    plain_epoch(plain, warm, args.batch_size, args.lr, seed=args.repeats)
    rows = []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        ae_loss = engine(rep).fit(ae, x).losses[-1].item()
        t1 = time.perf_counter()
        plain_loss = plain_epoch(plain, x, args.batch_size, args.lr, seed=rep)
        t2 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, ae_loss, plain_loss))

    aezoo_s = statistics.median(r[0] for r in rows)
    plain_s = statistics.median(r[1] for r in rows)
    ratio = statistics.median(a / b for a, b, _, _ in rows)  # paired: each round's two epochs ran back to back
    noisy = any(max(col) > 1.5 * min(col) for col in ([r[0] for r in rows], [r[1] for r in rows]))
    print(f"svi_overhead: VAE {cfg.x_dim}-{'-'.join(map(str, hidden))}-{cfg.z_dim} {cfg.activation} bernoulli, "
          f"{args.data} data N={args.n}, B={args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'round':>5} {'aezoo s':>9} {'plain s':>9} {'ratio':>7} {'aezoo loss':>11} {'plain loss':>11}")
    for i, (a, b, la, lb) in enumerate(rows, 1):
        print(f"{i:>5} {a:9.3f} {b:9.3f} {a / b:7.3f} {la:11.3f} {lb:11.3f}")
    print(f"{'med':>5} {aezoo_s:9.3f} {plain_s:9.3f} {ratio:7.3f}   (ratio: median of the rounds' ratios)")
    if noisy:
        print("warning: epoch times vary by more than 1.5x, so other load disturbed them; rerun on an idle "
              "machine or with OMP_NUM_THREADS=1")
    final_gap = abs(rows[-1][2] - rows[-1][3]) / abs(rows[-1][3])
    print(f"final loss (nats/datum): aezoo {rows[-1][2]:.3f}, plain {rows[-1][3]:.3f} "
          f"({'same range' if final_gap < 0.05 else 'DIFFER by more than 5%: not the same objective?'})")
    print(f"goal ratio <= {GOAL_RATIO:.2f}: {'met' if ratio <= GOAL_RATIO else 'NOT met'} (ratio {ratio:.3f})")
    result = {
        "benchmark": "svi_overhead",
        "aezoo_s_per_epoch": round(aezoo_s, 4), "plain_s_per_epoch": round(plain_s, 4),
        "ratio": round(ratio, 4), "goal_ratio": GOAL_RATIO, "n": args.n, "batch_size": args.batch_size,
        "data": args.data, "repeats": args.repeats, "noisy": noisy,
        "aezoo_final_loss": round(rows[-1][2], 3), "plain_final_loss": round(rows[-1][3], 3),
        "torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
