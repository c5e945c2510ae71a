"""Generation seconds versus sequence length T: VSSM parallel decode, its sequential decode, a GRU fed back its outputs.

What it measures: the time to draw ``--n`` binary sequences of ``T`` steps (``D_x = 28``, the
``mnist_rows`` frame size) from

- ``vssm_parallel``: :func:`aezoo.models.vssm.generate` with ``parallel=True``: all ``z_t`` from the
  prior at once, then one parallel scan (:func:`aezoo.nn.linear_scan`) per SSM layer [1];
- ``vssm_sequential``: the same model and latents decoded by the step-by-step loop (``parallel=False``);
- ``gru_feedback``: the usual autoregressive decoder, a ``GRUCell`` of the same hidden size ``H`` whose
  input at step ``t`` is ``(z_t, x_t-1)``, sampling ``x_t`` before it can take the next step.

Untrained weights (the cost does not depend on their values). For each ``T`` in ``--ts`` the
three methods run in ``--rounds`` rounds, their order rotated every round so that drift in the
machine's load hits them alike; the table gives the median seconds and the ratios to
``vssm_parallel``. One torch thread (``torch.set_num_threads(1)``), no gradients.

What to expect: on one CPU thread a scan has no parallel hardware to use; both VSSM decodes then
cost about the same (the per-step dense layers they share dominate) and the gain over the GRU comes
from batching the readouts over time instead of sampling before each step. The speed-ups of [1]
are measured on a GPU, where the ``log T``-depth scan runs its steps in parallel.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vssm_generation            # T = 64 .. 4096
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vssm_generation --quick    # seconds

The last line printed is one JSON object with the figures.

References:
    1. Parallelizing Autoregressive Generation with Variational State Space Models, Lambrechts,
       Claes, Geurts & Ernst, arXiv:2407.08415.
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

import torch
from torch import nn

from aezoo.models import vssm
from benchmarks.common import add_device, device_name


class FeedbackGRU(nn.Module):
    """``h_t = GRU((z_t, x_t-1), h_t-1)``, ``x_t ~ Bernoulli(sigmoid(W h_t))``: generation must go step by step."""

    def __init__(self, x_dim: int, z_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(z_dim + x_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, x_dim)

    @torch.no_grad()
    def generate(self, n: int, T: int, z_dim: int) -> torch.Tensor:
        z = torch.randn(n, T, z_dim, device=self.out.weight.device)
        x_prev, h, xs = z.new_zeros(n, self.out.out_features), z.new_zeros(n, self.cell.hidden_size), []
        for t in range(T):
            h = self.cell(torch.cat([z[:, t], x_prev], -1), h)
            x_prev = torch.bernoulli(torch.sigmoid(self.out(h)))
            xs.append(x_prev)
        return torch.stack(xs, 1)


def seconds(fn) -> float:
    start = time.perf_counter()
    out = fn()
    if out.is_cuda:  # CUDA kernels run asynchronously: wait for them
        torch.cuda.synchronize(out.device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ts", default="64,256,1024,4096", help="comma-separated sequence lengths T")
    p.add_argument("--n", type=int, default=16, help="sequences per draw (batch)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--hidden-dim", type=int, default=64, help="H of the VSSM's SSM layers and of the GRU")
    p.add_argument("--state-dim", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="T = 64, 256, 2 rounds: a few seconds")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    ts = [64, 256] if args.quick else [int(t) for t in args.ts.split(",")]
    rounds = 2 if args.quick else args.rounds
    if min(ts) < 1 or args.n < 1 or rounds < 1:
        raise SystemExit("--ts, --n and --rounds must be >= 1")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    cfg = vssm.Config(x_dim=28, hidden_dim=args.hidden_dim, state_dim=args.state_dim, num_layers=args.num_layers)
    ae = vssm.build(cfg).to(args.device).eval()
    gru = FeedbackGRU(cfg.x_dim, cfg.z_dim, args.hidden_dim).to(args.device).eval()
    methods = {
        "vssm_parallel": lambda T: vssm.generate(ae, args.n, T, parallel=True),
        "vssm_sequential": lambda T: vssm.generate(ae, args.n, T, parallel=False),
        "gru_feedback": lambda T: gru.generate(args.n, T, cfg.z_dim),
    }
    names = list(methods)
    for name in names:  # warm-up
        methods[name](8)
    table = {}
    for T in ts:
        times = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % 3:] + names[:r % 3]:
                times[name].append(seconds(lambda: methods[name](T)))
        med = {name: statistics.median(v) for name, v in times.items()}
        table[T] = {**med, "sequential_over_parallel": med["vssm_sequential"] / med["vssm_parallel"],
                    "gru_over_parallel": med["gru_feedback"] / med["vssm_parallel"]}
    print(f"generation seconds, n={args.n} sequences, D_x=28, H={args.hidden_dim}, S={args.state_dim}, "
          f"{args.num_layers} layers, median of {rounds} rounds, 1 thread")
    print(f"{'T':>6} {'vssm parallel':>14} {'vssm sequential':>16} {'gru feedback':>13} {'seq/par':>8} {'gru/par':>8}")
    for T, row in table.items():
        print(f"{T:>6} {row['vssm_parallel']:>14.4f} {row['vssm_sequential']:>16.4f} {row['gru_feedback']:>13.4f} "
              f"{row['sequential_over_parallel']:>8.1f} {row['gru_over_parallel']:>8.1f}")
    result = {"benchmark": "vssm_generation", "n": args.n, "hidden_dim": args.hidden_dim,
              "state_dim": args.state_dim, "num_layers": args.num_layers, "rounds": rounds,
              "device": device_name(args.device), "threads": 1,
              "torch": torch.__version__, "machine": platform.machine(),
              "results": {str(T): row for T, row in table.items()}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
