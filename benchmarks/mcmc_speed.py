"""Effective samples per second of NUTS on one Bayesian decoder posterior: aezoo vs Pyro vs NumPyro.

The posterior: a Bayesian linear decoder ``x_n = W z_n + b + eps``, ``eps ~ N(0, sigma^2 I)``, with
fixed codes ``z_n`` (the first ``--z-dim`` principal components of the data, standardised),
priors ``W ~ N(0, 1 / D_z)`` and ``b ~ N(0, 1)`` per entry, and ``sigma`` fixed; the data are the
first ``--n`` sklearn 8x8 digits scaled to [0, 1] (``D_x = 64``, so ``65 D_z... `` parameters:
``D_x (D_z + 1)``). Every sampler gets the same data, warm-up, draws and chains (run one after
another in this process) and adapts a diagonal mass matrix; the clock includes warm-up and, for
NumPyro, JIT compilation.

Samplers:

* ``pyro``: Pyro's default ``MCMC(NUTS(model))`` on the Pyro model, the peer users start from.
* ``aezoo``: ``ENGINES["nuts"]`` (Pyro backend) on the same Pyro model.
* ``aezoo_jit``: the same with ``jit_compile=True`` (Pyro's ``torch.jit.trace`` of the potential).
* ``aezoo_numpyro``: ``ENGINES["nuts"]`` with ``backend="numpyro"``: NumPyro's NUTS driving the
  Pyro model's potential through ``jax.pure_callback``.
* ``aezoo_twin``: ``ENGINES["nuts"]`` with ``backend="jax"`` on the same posterior written as the zoo
  writes it (a ``PyroModule`` whose decoder is an :class:`aezoo.nn.MLP` with ``PyroSample`` weights,
  ``bayesian_ae.bayesian_mlp``): its JAX twin (:mod:`aezoo.inference.jax_twin`) sampled by NumPyro's
  NUTS end to end in XLA, the chains vectorized (``chain_method="vectorized"``).
* ``numpyro``: NumPyro's NUTS on the same model written in NumPyro (JAX, compiled end to end),
  the named peer of the goal (chains sequential, NumPyro's default on one CPU device).
* ``numpyro_vectorized``: the same with ``chain_method="vectorized"``.

``--rounds R`` repeats the samplers R times in alternating order (forward, then reversed) so that a
noisy shared machine penalises none of them systematically; the figures are medians over rounds.

Goals (issue 16): ``aezoo_twin`` >= 1.0x and ``aezoo_jit`` (a user Pyro model) >= 0.5x NumPyro's ESS/s.

Figure: ESS/s = (minimum bulk ESS over all parameters, ArviZ rank-normalised) / wall seconds. The
goal is aezoo's ESS/s >= NumPyro's (``ratio_vs_numpyro >= 1``). Posterior means of all samplers
are also compared with the exact conjugate posterior (max |error| in posterior sds).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.mcmc_speed
    .venv/bin/python -m benchmarks.mcmc_speed --samplers aezoo_twin,numpyro,aezoo_jit --rounds 3

``--device cuda`` puts the data of the Pyro samplers (``pyro``, ``aezoo``, ``aezoo_jit``, ``aezoo_numpyro``)
on a GPU; NumPyro and the twin run on JAX's own device, recorded as ``jax_device`` in the JSON line.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from aezoo.diagnostics import az
from aezoo.inference import ENGINES
from aezoo.runs import versions
from benchmarks.common import add_device, device_name

SAMPLERS = ("pyro", "aezoo", "aezoo_jit", "aezoo_numpyro", "aezoo_twin", "numpyro", "numpyro_vectorized")


def problem(n: int, z_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``(n, D_z)`` and data ``(n, 64)``: digits in [0, 1] and their standardised top PCs."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    x = load_digits().data[:n] / 16.0
    z = PCA(z_dim, random_state=seed).fit_transform(x)
    z = (z - z.mean(0)) / z.std(0)
    return torch.tensor(z, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)


def pyro_model(z: torch.Tensor, x: torch.Tensor, sigma: float) -> None:
    """The Bayesian linear decoder in Pyro."""
    w = pyro.sample("w", dist.Normal(x.new_zeros(x.shape[1], z.shape[1]), z.shape[1] ** -0.5).to_event(2))
    b = pyro.sample("b", dist.Normal(x.new_zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(z @ w.T + b, sigma).to_event(1), obs=x)


def exact_posterior(z: torch.Tensor, x: torch.Tensor, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and sd of ``[W | b]`` ``(D_x, D_z + 1)`` (each row of ``x`` is a conjugate regression)."""
    design = torch.cat([z, torch.ones(len(z), 1)], 1).double()
    prior_prec = torch.diag(torch.tensor([float(z.shape[1])] * z.shape[1] + [1.0], dtype=torch.float64))
    cov = torch.linalg.inv(design.T @ design / sigma**2 + prior_prec)
    mean = (cov @ design.T @ x.double() / sigma**2).T
    return mean.numpy(), np.sqrt(np.diag(cov.numpy()))[None, :].repeat(x.shape[1], 0)


def run_pyro(z, x, sigma, args) -> dict[str, torch.Tensor]:
    draws = []
    for chain in range(args.num_chains):
        pyro.set_rng_seed(args.seed + chain)
        mcmc = pyro.infer.MCMC(pyro.infer.NUTS(pyro_model), num_samples=args.num_samples,
                               warmup_steps=args.warmup_steps, disable_progbar=True)
        mcmc.run(z, x, sigma)
        draws.append(mcmc.get_samples())
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}


def run_aezoo(z, x, sigma, args, **fields) -> dict[str, torch.Tensor]:
    engine = ENGINES["nuts"](num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                             num_chains=args.num_chains, seed=args.seed, progress=False, **fields)
    return engine.fit(lambda z_, x_: pyro_model(z_, x_, sigma), z, x).samples


class ZooDecoder(pyro.nn.PyroModule):
    """The same model as the zoo writes it: ``x = decoder(z) + eps`` with a Bayesian linear ``aezoo.nn.MLP``."""

    def __init__(self, z_dim: int, x_dim: int, sigma: float) -> None:
        from aezoo.models.bayesian_ae import bayesian_mlp
        from aezoo.nn import MLP

        super().__init__()
        self.sigma = sigma
        self.decoder = bayesian_mlp(MLP(z_dim, (), x_dim), 1.0)  # W ~ N(0, 1 / D_z), b ~ N(0, 1): the same priors

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> None:
        out = self.decoder(z)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(out, self.sigma).to_event(1), obs=x)


def run_twin(z, x, sigma, args) -> dict[str, torch.Tensor]:
    engine = ENGINES["nuts"](num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                             num_chains=args.num_chains, seed=args.seed, progress=False, backend="jax")
    samples = engine.fit(ZooDecoder(z.shape[1], x.shape[1], sigma).to(x.device), z, x).samples
    return {"w": samples["decoder.0.weight"], "b": samples["decoder.0.bias"]}


def run_numpyro(z, x, sigma, args, chain_method: str = "sequential") -> dict[str, torch.Tensor]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist

    def model(z, x):
        w = numpyro.sample("w", ndist.Normal(jnp.zeros((x.shape[1], z.shape[1])), z.shape[1] ** -0.5).to_event(2))
        b = numpyro.sample("b", ndist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", ndist.Normal(z @ w.T + b, sigma).to_event(1), obs=x)

    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(model), num_warmup=args.warmup_steps, num_samples=args.num_samples,
                              num_chains=args.num_chains, chain_method=chain_method, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(args.seed), jnp.asarray(z.cpu().numpy()), jnp.asarray(x.cpu().numpy()))
    return {k: torch.tensor(np.array(v)) for k, v in mcmc.get_samples(group_by_chain=True).items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="data points")
    parser.add_argument("--z-dim", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=0.2, help="observation sd")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians are reported")
    add_device(parser)
    args = parser.parse_args(argv)
    pyro.settings.set(module_local_params=True)
    z, x = problem(args.n, args.z_dim, args.seed)
    mean, sd = exact_posterior(z, x, args.sigma)
    z, x = z.to(args.device), x.to(args.device)  # the Pyro samplers' data; NumPyro and the twin use JAX's device
    runners = {"pyro": run_pyro, "aezoo": run_aezoo, "aezoo_numpyro": run_numpyro_backend,
               "aezoo_jit": run_aezoo_jit, "aezoo_twin": run_twin, "numpyro": run_numpyro,
               "numpyro_vectorized": run_numpyro_vectorized}
    names = args.samplers.split(",")
    per_round: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            samples = runners[name](z, x, args.sigma, args)
            seconds = time.perf_counter() - start
            samples = {k: v.cpu() for k, v in samples.items()}
            summary = az.mcmc_summary(samples, per_coordinate=False)
            got = torch.cat([samples["w"], samples["b"].unsqueeze(-1)], -1).reshape(-1, *mean.shape).double().mean(0)
            row = {"seconds": seconds, "ess_bulk_min": summary["ess_bulk_min"], "r_hat_max": summary["r_hat_max"],
                   "ess_per_second": summary["ess_bulk_min"] / seconds,
                   "max_mean_error_sds": float(np.max(np.abs(got.numpy() - mean) / sd))}
            per_round[name].append(row)
            print(f"round {r} {name:>18}: {seconds:7.1f} s  min bulk ESS {row['ess_bulk_min']:7.1f}  "
                  f"ESS/s {row['ess_per_second']:7.2f}  R-hat max {row['r_hat_max']:.3f}  "
                  f"max |mean error| {row['max_mean_error_sds']:.2f} sd", flush=True)
    rows = {name: {k: float(np.median([row[k] for row in runs])) for k in runs[0]} for name, runs in per_round.items()}
    if "numpyro" in rows:
        for row in rows.values():
            row["ratio_vs_numpyro"] = row["ess_per_second"] / rows["numpyro"]["ess_per_second"]
    dims = x.shape[1] * (args.z_dim + 1)
    print(f"\nposterior: Bayesian linear decoder, {dims} parameters, {args.n} digits; {args.num_chains} chains x "
          f"({args.warmup_steps} warm-up + {args.num_samples}) draws; ESS/s relative to NumPyro:")
    for name, row in rows.items():
        if "ratio_vs_numpyro" in row:
            print(f"  {name:>14}: {row['ratio_vs_numpyro']:.3f}")
    import jax
    import numpyro

    out = {"benchmark": "mcmc_speed", "parameters": dims, "n": args.n, "num_chains": args.num_chains,
           "warmup_steps": args.warmup_steps, "num_samples": args.num_samples, "rounds": args.rounds, "rows": rows,
           "per_round": per_round, "goal": "aezoo_twin >= 1.0x NumPyro ESS/s; aezoo_jit >= 0.5x",
           "threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "device": device_name(args.device),
           "jax_device": str(jax.devices()[0].device_kind),
           "versions": {**versions(), "numpyro": numpyro.__version__, "jax": jax.__version__}}
    print(json.dumps(out))
    return out


def run_aezoo_jit(z, x, sigma, args) -> dict[str, torch.Tensor]:
    return run_aezoo(z, x, sigma, args, jit_compile=True)


def run_numpyro_vectorized(z, x, sigma, args) -> dict[str, torch.Tensor]:
    return run_numpyro(z, x, sigma, args, chain_method="vectorized")


def run_numpyro_backend(z, x, sigma, args) -> dict[str, torch.Tensor]:
    return run_aezoo(z, x, sigma, args, backend="numpyro")


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    main()
