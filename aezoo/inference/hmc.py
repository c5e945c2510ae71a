"""Hamiltonian Monte Carlo over the latent sites of any Pyro model, with a Pyro or NumPyro backend.

``hmc`` runs a fixed number of leapfrog steps per draw [1]; :mod:`aezoo.inference.nuts` adds the
No-U-Turn sampler [2]. Both adapt the step size (dual averaging, towards ``target_accept``) and a
diagonal or dense mass matrix during warm-up, run ``num_chains`` chains one after another and
return per-draw ``diverging``, ``accept_prob``, ``step_size`` (and ``num_steps``, ``energy`` with
NumPyro) ``(C, S)`` statistics; see :mod:`aezoo.inference.mcmc` for the shared contract. Network
parameters stay fixed: the posterior is over ``pyro.sample`` sites only (Bayesian weights declared
with ``PyroSample``, global hyper-parameters, or the local ``z`` of a handful of data points, the
gold standard that measures a guide's amortization gap).

Backends (``backend``):

* ``jax``: the model's exact JAX twin (:mod:`aezoo.inference.jax_twin`, generated from one trace of
  the Pyro model and its ``aezoo.nn`` networks), sampled by NumPyro's kernels end to end in XLA,
  all chains at once (``chain_method="vectorized"``); a model without a twin (the reason in one
  line) runs on ``pyro``. ``auto`` (default) is ``jax`` for chains of at least
  :data:`AUTO_MIN_STEPS` warm-up + draws (the compile time pays off) and ``pyro`` below.
* ``pyro``: Pyro's ``HMC``/``NUTS`` kernels [4], stepped one draw at a time, the potential compiled
  by ``torch.jit.trace`` where the model traces cleanly (``jit_compile``).
* ``numpyro``: NumPyro's kernels [3] (the tree building is compiled by XLA) on the same Pyro
  model: the potential energy and its gradient are Pyro's (``initialize_model``), handed to
  JAX through ``jax.pure_callback``, so any Pyro model works unchanged. The measured trade-off
  is in ``benchmarks/mcmc_speed.py``.

References:
    1. MCMC using Hamiltonian dynamics, Neal, arXiv:1206.1901.
    2. The No-U-Turn Sampler, Hoffman & Gelman, arXiv:1111.4246.
    3. Composable Effects for Flexible and Accelerated Probabilistic Programming in NumPyro,
       Phan, Pradhan & Jankowiak, arXiv:1912.11554.
    4. Pyro: Deep Universal Probabilistic Programming, Bingham et al., arXiv:1810.09538.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyro
import pyro.infer.mcmc as pyro_mcmc
import torch
from pyro.infer.mcmc.util import initialize_model
from torch import Tensor
from tqdm.auto import tqdm

from aezoo.checks import integer, positive
from aezoo.inference.jax_twin import JaxTwin, twin_or_reason
from aezoo.inference.mcmc import Draws, FlatSpace, McmcEngine, data_dtype, plate_nesting

BACKENDS = ("auto", "jax", "pyro", "numpyro")
AUTO_MIN_STEPS = 400  # backend="auto" compiles the twin (tens of seconds on a CPU) only for chains this long


@dataclass(frozen=True)
class HMC(McmcEngine):
    """Hamiltonian Monte Carlo with ``num_steps`` leapfrog steps per draw.

    Attributes:
        step_size: initial leapfrog step size (adapted during warm-up when ``adapt_step_size``).
        num_steps: leapfrog steps per draw (NUTS chooses its own).
        adapt_step_size: dual-averaging step-size adaptation during warm-up.
        adapt_mass_matrix: estimate the mass matrix from warm-up draws.
        dense_mass: a dense (full) mass matrix instead of a diagonal one.
        target_accept: target mean acceptance probability of the adaptation.
        backend: ``"jax"`` (the model's JAX twin, :mod:`aezoo.inference.jax_twin`, all chains at once; without
            a twin one line says why and Pyro samples), ``"auto"`` (``"jax"`` for chains of at least
            :data:`AUTO_MIN_STEPS` warm-up + draws, whose compile time pays off; else ``"pyro"``), ``"pyro"`` or
            ``"numpyro"`` (module docstring).
        jit_compile: with the Pyro backend, compile the potential with ``torch.jit.trace`` (Pyro's option,
            measured in ``benchmarks/mcmc_speed.py``): the compiled potential is evaluated without re-tracing the
            model. ``None`` (default): on where the model traces cleanly (no error or warning while tracing, and
            the compiled potential and gradient equal the eager ones at the start and at a shifted point), else off
            with a one-line message.
    """

    step_size: float = 0.1
    num_steps: int = 10
    adapt_step_size: bool = True
    adapt_mass_matrix: bool = True
    dense_mass: bool = False
    target_accept: float = 0.8
    backend: str = "auto"
    jit_compile: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("step_size", self.step_size)
        integer("num_steps", self.num_steps)
        if not 0 < self.target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; choose one of {BACKENDS}")

    def pyro_kernel(self, model: Callable, dtype: torch.dtype | None = None,
                    max_plate_nesting: int | None = None) -> pyro_mcmc.HMC:
        return pyro_mcmc.HMC(model, num_steps=self.num_steps, **self._pyro_args(dtype, max_plate_nesting))

    def numpyro_kernel(self, potential_fn: Callable | None = None, model: Callable | None = None):
        import numpyro.infer

        return numpyro.infer.HMC(model, potential_fn=potential_fn, num_steps=self.num_steps, trajectory_length=None,
                                 **self._numpyro_args())

    def _pyro_args(self, dtype: torch.dtype | None = None, max_plate_nesting: int | None = None) -> dict:
        return dict(step_size=self.step_size, adapt_step_size=self.adapt_step_size, init_strategy=self.init_fn(dtype),
                    max_plate_nesting=max_plate_nesting,
                    target_accept_prob=self.target_accept, adapt_mass_matrix=self.adapt_mass_matrix,
                    full_mass=self.dense_mass, jit_compile=self.jit_compile, ignore_jit_warnings=True)

    def _numpyro_args(self) -> dict:
        return dict(step_size=self.step_size, adapt_step_size=self.adapt_step_size,
                    target_accept_prob=self.target_accept, adapt_mass_matrix=self.adapt_mass_matrix,
                    dense_mass=self.dense_mass)

    def run_chain(self, model, data, chain, checkpoint, resume) -> tuple[Draws, Draws]:
        run = _numpyro_chain if self.backend == "numpyro" else _pyro_chain
        return run(self, model, data, chain)

    def run_chains(self, model, data, state, save) -> None:
        """With ``backend`` ``auto``/``jax``: all remaining chains at once on the JAX twin (NumPyro,
        ``chain_method="vectorized"``), each chain's ``seconds`` the run's wall time over the chains; without a
        twin, one line says why and the chains run on the Pyro backend."""
        first = len(state["chains"])
        short = self.backend == "auto" and self.warmup_steps + self.num_samples < AUTO_MIN_STEPS
        if self.backend not in ("auto", "jax") or first >= self.num_chains or short:
            return super().run_chains(model, data, state, save)
        inits, strategy, nesting = [], self.init_fn(data_dtype(data)), plate_nesting(model, *data)
        for c in range(first, self.num_chains):
            pyro.set_rng_seed(self.seed + c)
            init, _, transforms, _ = initialize_model(model, model_args=data, init_strategy=strategy,
                                                      max_plate_nesting=nesting)
            inits.append((init, transforms))
        constrained = {k: transforms[k].inv(v) if k in transforms else v for k, v in inits[0][0].items()}
        twin, why = twin_or_reason(model, data, constrained)
        if twin is None:
            print(f"{type(self).__name__}: no JAX twin ({why}); sampling with the Pyro backend", file=sys.stderr)
            return super().run_chains(model, data, state, save)
        start = time.perf_counter()
        draws, stats = _twin_chains(self, twin, [i for i, _ in inits], first)
        seconds = (time.perf_counter() - start) / len(inits)
        for c in range(len(inits)):
            state["chains"].append({"draws": {k: v[c] for k, v in draws.items()},
                                    "stats": {k: v[c] for k, v in stats.items()}, "seconds": seconds})
        save(None)


class _Counted:
    """A potential function that counts its calls: one per leapfrog step (Pyro caches the start's gradient)."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _pyro_chain(engine: HMC, model: Callable, data: tuple[Tensor, ...], chain: int) -> tuple[Draws, Draws]:
    """One chain with Pyro's kernel, reading per-draw statistics from the kernel's counters; ``num_steps`` counts
    the potential's evaluations in the draw and ``tree_depth`` is ``ceil(log2(num_steps + 1))`` (NUTS's doubling)."""
    kernel = _ready_kernel(engine, model, data, quiet=chain > 0)
    kernel.potential_fn = counted = _Counted(kernel.potential_fn)
    params = kernel.initial_params
    draws: dict[str, list[Tensor]] = {name: [] for name in params}
    stats: dict[str, list[float]] = {"diverging": [], "accept_prob": [], "step_size": [], "num_steps": [],
                                     "tree_depth": []}
    total = engine.warmup_steps + engine.num_samples
    bar = tqdm(range(total), desc=f"chain {chain}", disable=not engine.progress, leave=False)
    for t in bar:
        divergences, mean_accept = len(kernel._divergences), kernel._mean_accept_prob
        counted.calls = 0
        params = kernel.sample(params)
        if t < engine.warmup_steps:
            continue
        n = t - engine.warmup_steps + 1  # Pyro keeps the running mean of accept_prob over n draws
        stats["accept_prob"].append(n * kernel._mean_accept_prob - (n - 1) * mean_accept)
        stats["diverging"].append(len(kernel._divergences) > divergences)
        stats["step_size"].append(float(kernel.step_size))
        stats["num_steps"].append(counted.calls)
        stats["tree_depth"].append(math.ceil(math.log2(counted.calls + 1)))
        for name, value in params.items():
            draws[name].append(value.detach().clone())
        if t % 20 == 0:
            bar.set_postfix({k: v for k, v in kernel.logging().items()}, refresh=False)
    constrained = {name: kernel.transforms[name].inv(torch.stack(v)) if name in kernel.transforms else torch.stack(v)
                   for name, v in draws.items()}
    kernel.cleanup()
    return constrained, {k: torch.tensor(v) for k, v in stats.items()}


def _ready_kernel(engine: HMC, model: Callable, data: tuple, quiet: bool = False):
    """Pyro's kernel, set up; ``jit_compile=None`` tries the compiled potential and checks it (field docstring),
    saying in one line (unless ``quiet``) when it falls back."""
    dtype, nesting = data_dtype(data), plate_nesting(model, *data)
    if engine.jit_compile is None:
        rng = pyro.util.get_rng_state()
        try:
            kernel = dataclasses.replace(engine, jit_compile=True).pyro_kernel(model, dtype, nesting)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # a warning while tracing (other than Pyro's ignored ones): not clean
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")  # torch's, not ours
                kernel.setup(engine.warmup_steps, *data)
                _check_compiled(kernel, model, data, nesting)
            return kernel
        except Exception as err:  # noqa: BLE001 - any failure of the trace means: run uncompiled
            reason = (str(err).strip().splitlines() or [""])[0][:120]
            if not quiet:
                print(f"{type(engine).__name__}: the model does not trace cleanly for jit_compile "
                      f"({type(err).__name__}: {reason}); running its potential uncompiled", file=sys.stderr)
            pyro.util.set_rng_state(rng)
    kernel = dataclasses.replace(engine, jit_compile=bool(engine.jit_compile)).pyro_kernel(model, dtype, nesting)
    kernel.setup(engine.warmup_steps, *data)
    return kernel


def _check_compiled(kernel, model: Callable, data: tuple, nesting: int) -> None:
    """``RuntimeError`` unless the kernel's compiled potential and gradient equal the eager ones at the start
    and at a shifted point (the random stream is left as it was)."""
    from pyro.ops.integrator import potential_grad

    rng = pyro.util.get_rng_state()
    try:
        eager = initialize_model(model, model_args=data, max_plate_nesting=nesting)[1]
        start = kernel.initial_params
        for point in (start, {k: v + 0.1 * torch.randn_like(v) for k, v in start.items()}):
            (g1, e1), (g2, e2) = potential_grad(kernel.potential_fn, point), potential_grad(eager, point)
            tol = dict(rtol=1e-4, atol=1e-4)
            if not (torch.allclose(e1, e2, **tol) and all(torch.allclose(g1[k], g2[k], **tol) for k in g2)):
                raise RuntimeError(f"the compiled potential {float(e1):.6g} differs from the eager {float(e2):.6g}")
    finally:
        pyro.util.set_rng_state(rng)


class _TorchPotential:
    """Pyro's potential energy of ``model(*data)`` as a function of one flat unconstrained vector."""

    def __init__(self, model: Callable, data: tuple[Tensor, ...], init_strategy: Callable) -> None:
        init, self.potential_fn, transforms, _ = initialize_model(model, model_args=data, init_strategy=init_strategy,
                                                                  max_plate_nesting=plate_nesting(model, *data))
        self.space = FlatSpace(init, transforms)
        self.dtype = init[self.space.names[0]].dtype  # the model's: float64 models run in float64 (JAX x64)
        self.device = init[self.space.names[0]].device  # the model's device; JAX gets host arrays
        self.np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        self.init = self.space.flatten(init).detach().cpu().numpy().astype(self.np_dtype)

    def value_and_grad(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energy and gradient; an invalid point (e.g. a scale underflowing to 0) has infinite energy,
        which NumPyro counts as a divergence (validation is off while chains run, see ``McmcEngine.fit``)."""
        z = torch.tensor(np.asarray(flat), dtype=self.dtype, device=self.device, requires_grad=True)
        with torch.enable_grad():
            energy = self.potential_fn(self.space.unflatten(z))
            (grad,) = torch.autograd.grad(energy, z)
        if not (torch.isfinite(energy) and torch.isfinite(grad).all()):
            return self.np_dtype(np.inf), np.zeros_like(flat, dtype=self.np_dtype)
        return self.np_dtype(energy.item()), grad.cpu().numpy().astype(self.np_dtype)


def _jax_potential(torch_potential: _TorchPotential) -> Callable:
    """A JAX-differentiable potential that calls Pyro through ``jax.pure_callback``."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.float64 if torch_potential.np_dtype == np.float64 else jnp.float32
    shapes = (jax.ShapeDtypeStruct((), dtype), jax.ShapeDtypeStruct(torch_potential.init.shape, dtype))

    def both(z):
        return jax.pure_callback(torch_potential.value_and_grad, shapes, z)

    @jax.custom_vjp
    def potential(z):
        return both(z)[0]

    def forward(z):
        value, grad = both(z)
        return value, grad

    potential.defvjp(forward, lambda grad, g: (g * grad,))
    return potential


def _numpyro_chain(engine: HMC, model: Callable, data: tuple[Tensor, ...], chain: int) -> tuple[Draws, Draws]:
    """One chain with NumPyro's kernel on Pyro's potential; seeded by ``seed + chain``."""
    import jax
    import numpyro.infer

    torch_potential = _TorchPotential(model, data, engine.init_fn(data_dtype(data)))
    if torch_potential.np_dtype == np.float64:
        jax.config.update("jax_enable_x64", True)  # keep a float64 model in float64 (JAX defaults to float32)
    import jax.numpy as jnp

    # NumPyro works in JAX's float type (float64 once x64 is on, also for a float32 model): the callback
    # computes in the model's dtype and hands JAX its own
    torch_potential.np_dtype = np.dtype(jnp.zeros(()).dtype).type
    torch_potential.init = torch_potential.init.astype(torch_potential.np_dtype)
    kernel = engine.numpyro_kernel(_jax_potential(torch_potential))
    mcmc = numpyro.infer.MCMC(kernel, num_warmup=engine.warmup_steps, num_samples=engine.num_samples,
                              num_chains=1, progress_bar=engine.progress)
    fields = ("diverging", "accept_prob", "num_steps", "adapt_state.step_size", "energy")
    mcmc.run(jax.random.PRNGKey(engine.seed + chain), init_params=torch_potential.init, extra_fields=fields)
    flat = torch.tensor(np.array(mcmc.get_samples()), dtype=torch_potential.dtype)
    draws = torch_potential.space.constrained(flat)
    extra = mcmc.get_extra_fields()
    stats = {name.rsplit(".", 1)[-1]: torch.tensor(np.array(extra[name])) for name in fields}
    stats["tree_depth"] = torch.ceil(torch.log2(stats["num_steps"].double() + 1)).long()
    return draws, stats


def _twin_chains(engine: HMC, twin: JaxTwin, inits: list[dict[str, Tensor]], first: int) -> tuple[Draws, Draws]:
    """All chains at once with NumPyro's kernel on the twin (XLA end to end).

    Returns site -> ``(C, S, ...)`` draws (constrained, the data's dtype) and ``(C, S)`` stats; chain ``c``
    starts at ``inits[c]`` (unconstrained values) with the key ``seed + first + c``."""
    import jax
    import numpyro.infer

    if twin.dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)  # keep a float64 model in float64 (JAX defaults to float32)
    import jax.numpy as jnp

    real = jnp.zeros(()).dtype  # float64 once x64 is on (also for a float32 model): NumPyro needs one dtype
    init = {k: jnp.asarray(np.stack([i[k].detach().cpu().numpy() for i in inits]), dtype=real) for k in twin.sites}
    if len(inits) == 1:
        init = {k: v[0] for k, v in init.items()}
    mcmc = numpyro.infer.MCMC(engine.numpyro_kernel(model=twin.model), num_warmup=engine.warmup_steps,
                              num_samples=engine.num_samples, num_chains=len(inits), chain_method="vectorized",
                              progress_bar=engine.progress)
    fields = ("diverging", "accept_prob", "num_steps", "adapt_state.step_size", "energy")
    keys = jnp.stack([jax.random.PRNGKey(engine.seed + first + c) for c in range(len(inits))])  # chain c: seed + c
    mcmc.run(keys if len(inits) > 1 else keys[0], init_params=init, extra_fields=fields)
    draws = {k: torch.tensor(np.asarray(v), dtype=twin.dtype) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {name.rsplit(".", 1)[-1]: torch.tensor(np.asarray(extra[name])) for name in fields}
    stats["tree_depth"] = torch.ceil(torch.log2(stats["num_steps"].double() + 1)).long()
    return draws, stats


ENGINE = HMC
