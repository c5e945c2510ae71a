"""Seconds per epoch and peak memory versus sequence length T: dense GP-VAE against the Markovian GP-VAE.

What it measures: ``gp_vae`` puts a dense GP prior over time on each latent channel (a ``(T, T)``
kernel matrix, Cholesky factorised: cubic in ``T``; its banded-precision guide is evaluated with
dense ``(T, T)`` matrices too), while ``markov_gp_vae`` writes a Matern GP as a linear
state-space model and runs Kalman filtering/smoothing (Pyro's ``GaussianHMM``: linear work in
``T``). For each ``T`` in ``--ts`` (default 16, 32, ..., 4096) and each model, both with the
Matern-3/2 kernel (the same prior; ``gp_vae`` with ``--dense-kernel``), the script fits
``--n`` sequences of :func:`aezoo.data.lds_video` (``D_x = 16``, ``D_z = 2``, 10% missing pixels and
frames) with ``ENGINES["svi"]`` for ``--epochs`` epochs of minibatch ``--batch-size`` and reports the
mean seconds per epoch (the engine's ``train_seconds``, which excludes the warm-up step) and the
peak resident memory the fit added (Linux: ``VmHWM`` after the fit minus ``VmRSS`` before it, with
the high-water mark reset through ``/proc/self/clear_refs`` and freed heap returned by
``malloc_trim`` first; ``torch`` allocates tensors outside Python's allocator, so tracemalloc would
not see them). The fitted exponent is the least-squares slope of log seconds (and log memory)
against log T over the ``T >= --fit-from`` points, where fixed per-step overheads no longer
dominate; the goal is a slope near 1 for ``markov_gp_vae``. The dense ``gp_vae`` runs only up to
``--dense-max-t`` (default 1024: at T^2.4 an epoch at T = 4096 would take about 9 minutes here); beyond
it its figures are ``null`` and the table says "skipped".

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.sequence_scaling
    .venv/bin/python benchmarks/sequence_scaling.py --ts 16,64,256,1024 --epochs 2

The last line printed is one JSON object with the figures. Pyro's settings are left at their
defaults except ``module_local_params=True``, as in the CLI.

References:
    GP-VAE: Deep Probabilistic Time Series Imputation, Fortuin, Baranchuk, Raetsch & Mandt, arXiv:1907.04155.
    Markovian Gaussian Process Variational Autoencoders, Zhu et al., arXiv:2207.05543.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro
import torch

from aezoo.data import lds_video
from aezoo.inference import ENGINES
from aezoo.models import gp_vae, markov_gp_vae
from benchmarks.common import add_device, device_name


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> int | None:
    """Return freed heap to the OS, reset the peak-RSS mark; the current RSS in kB (None off Linux)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def measure(module, cfg, T: int, n: int, epochs: int, batch_size: int, seed: int,
            device: str = "cpu") -> tuple[float, float | None]:
    """``(seconds per epoch, peak MiB added)`` of an SVI fit of ``module`` on ``n`` sequences of length ``T``."""
    seqs = lds_video(n, T=T, x_dim=cfg.x_dim, seed=seed)
    torch.manual_seed(seed)
    ae = module.build(cfg).to(device)
    engine = ENGINES["svi"](epochs=epochs, batch_size=batch_size, lr=1e-3, seed=seed, progress=False)
    before = _reset_peak()
    result = engine.fit(ae, seqs.x, seqs.mask)
    peak = _status_kb("VmHWM")
    mib = None if before is None or peak is None else max(peak - before, 0) / 1024
    return float(result.stats["train_seconds"]) / epochs, mib


def slope(ts: list[int], ys: list[float | None], fit_from: int) -> float | None:
    """Least-squares slope of log y against log T over ``T >= fit_from`` (None with fewer than 2 points)."""
    pts = [(math.log(t), math.log(y)) for t, y in zip(ts, ys) if t >= fit_from and y is not None and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ts", default="16,32,64,128,256,512,1024,2048,4096", help="comma-separated sequence lengths T")
    p.add_argument("--n", type=int, default=16, help="sequences per epoch")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3, help="epochs timed per (model, T); the mean is reported")
    p.add_argument("--fit-from", type=int, default=128, help="smallest T in the log-log fit")
    p.add_argument("--dense-kernel", default="matern32", help="gp_vae's kernel (aezoo.sequence.KERNELS)")
    p.add_argument("--dense-max-t", type=int, default=1024, help="largest T at which the dense gp_vae runs")
    p.add_argument("--seed", type=int, default=0)
    add_device(p)
    args = p.parse_args(argv)
    ts = [int(t) for t in args.ts.split(",")]

    pyro.settings.set(module_local_params=True)
    # fixed kernels: the figures are the cost of the priors (a learned length scale can make the dense (T, T)
    # matrix singular in float32 at T = 1024, which gp_vae then refuses with a message)
    common = {"x_dim": 16, "z_dim": 2, "hidden_dims": (32,), "lengthscale": 4.0, "learn_kernel": False}
    models = {
        "gp_vae": (gp_vae, gp_vae.Config(kernel=args.dense_kernel, **common)),
        "markov_gp_vae": (markov_gp_vae, markov_gp_vae.Config(nu=1.5, **common)),
    }
    for module, cfg in models.values():  # warm-up: one-time allocations and lazy imports stay out of the figures
        measure(module, cfg, ts[0], args.n, 1, args.batch_size, args.seed, args.device)
    t_start = time.perf_counter()
    seconds = {m: [] for m in models}
    memory = {m: [] for m in models}
    for T in ts:
        for name, (module, cfg) in models.items():
            if name == "gp_vae" and T > args.dense_max_t:
                seconds[name].append(None)
                memory[name].append(None)
                continue
            s, mib = measure(module, cfg, T, args.n, args.epochs, args.batch_size, args.seed, args.device)
            seconds[name].append(s)
            memory[name].append(mib)
    total_s = time.perf_counter() - t_start
    exponents = {m: {"seconds": slope(ts, seconds[m], args.fit_from), "memory": slope(ts, memory[m], args.fit_from)}
                 for m in models}

    print(f"sequence_scaling: SVI on {args.n} lds_video sequences (D_x=16, D_z=2, MLP 32), batch {args.batch_size}, "
          f"mean of {args.epochs} epochs; gp_vae kernel {args.dense_kernel}, markov_gp_vae Matern-3/2; "
          f"{torch.get_num_threads()} threads, {platform.machine()} CPU")
    print(f"{'T':>6} {'gp_vae s/epoch':>15} {'markov s/epoch':>15} {'gp_vae MiB':>11} {'markov MiB':>11}")

    def mib(v):
        return "n/a" if v is None else f"{v:.1f}"

    def sec(v):
        return "skipped" if v is None else f"{v:.4f}"

    for i, T in enumerate(ts):
        print(f"{T:>6} {sec(seconds['gp_vae'][i]):>15} {sec(seconds['markov_gp_vae'][i]):>15} "
              f"{mib(memory['gp_vae'][i]):>11} {mib(memory['markov_gp_vae'][i]):>11}")
    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}"

    for m in models:
        e = exponents[m]
        print(f"{m}: fitted exponent (T >= {args.fit_from}) seconds ~ T^{fmt(e['seconds'])}, "
              f"peak memory ~ T^{fmt(e['memory'])}")
    e = exponents["markov_gp_vae"]["seconds"]
    if e is not None:
        print(f"goal (markov_gp_vae seconds exponent near 1, below 1.3): {'met' if e < 1.3 else 'NOT met'}")
    print(f"time: total {total_s:.0f} s")

    result = {
        "benchmark": "sequence_scaling",
        "ts": ts,
        "seconds_per_epoch": {m: [None if v is None else round(v, 5) for v in seconds[m]] for m in models},
        "peak_mib": {m: [None if v is None else round(v, 2) for v in memory[m]] for m in models},
        "exponents": {m: {k: None if v is None else round(v, 3) for k, v in exponents[m].items()} for m in models},
        "fit_from": args.fit_from, "n": args.n, "batch_size": args.batch_size, "epochs": args.epochs,
        "dense_kernel": args.dense_kernel, "dense_max_t": args.dense_max_t, "seconds": round(total_s, 1),
        "seed": args.seed,
        "device": device_name(args.device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "pyro": pyro.__version__, "python": platform.python_version(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
