"""What the MCMC engines (``nuts``, ``hmc``, ``sghmc``) share: the chain loop, checkpoints, results.

An MCMC engine samples the posterior of every latent ``pyro.sample`` site of a Pyro model given
the data; network parameters (``pyro.param`` / ``nn.Parameter``) are held fixed and are never
changed. The model is an :class:`~aezoo.core.Autoencoder` (its ``model`` is used) or any Pyro
model called as ``model(*data)``. Chains run one after another in-process (Pyro's trap with
multi-process chains and CUDA is avoided), each seeded with ``seed + chain``; after each chain
the draws so far are written atomically to ``checkpoint``, and a fit that finds that file
resumes after the last finished chain (SGHMC also checkpoints inside a chain).

Results follow :class:`~aezoo.core.FitResult`: ``samples`` maps each latent site, and each
``pyro.deterministic`` site of the model (recomputed at every draw), to ``(C, S, *site_shape)``
draws in the site's own (constrained) space; ``stats`` holds per-draw ``(C, S)`` statistics where
the kernel has them (``diverging``, ``accept_prob``, ``step_size``, ``num_steps``, ``tree_depth``,
``energy``) and ``train_seconds`` ``(C,)``, warm-up included.

Chains start where ``init_strategy`` says (Pyro's init strategies [1]; ``init_values`` fixes some
sites), and the model is never asked to sample its prior, so improper priors
(``dist.ImproperUniform``, Stan's flat priors) work. Plain Pyro models may take non-tensor
positional arguments and keyword arguments (``fit(model, x, K, order=2)``).

References:
    1. Pyro's ``pyro.infer.autoguide.initialization``: init_to_uniform (the default of Pyro's HMC),
       init_to_median, init_to_mean, init_to_feasible, init_to_sample, init_to_value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import initialization as init
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.checks import integer
from aezoo.core import Autoencoder, FitResult, atomic_torch_save, load_checkpoint

Draws = dict[str, Tensor]  # site -> (S, *site_shape) for one chain
INIT_STRATEGIES = {"uniform": init.init_to_uniform, "median": init.init_to_median, "mean": init.init_to_mean,
                   "feasible": init.init_to_feasible, "sample": init.init_to_sample}


def model_of(target: Autoencoder | Callable) -> Callable:
    """The Pyro model an MCMC engine samples: ``ae.model`` for an autoencoder, else ``target`` itself."""
    return target.model if isinstance(target, Autoencoder) else target


def latent_sites(model: Callable, *data: Tensor, **kwargs: Any) -> dict[str, dict]:
    """Latent (unobserved, non-subsample) sample sites of one trace of ``model(*data, **kwargs)``, their values
    set by ``init_to_uniform`` rather than drawn from the prior (so improper priors trace too)."""
    tr = _trace(model, *data, **kwargs)
    return {name: site for name, site in tr.nodes.items() if site["type"] == "sample" and not site["is_observed"]}


def deterministic_names(model: Callable, *data: Tensor, **kwargs: Any) -> list[str]:
    """The ``pyro.deterministic`` sites of ``model(*data, **kwargs)``."""
    return [n for n, s in _trace(model, *data, **kwargs).nodes.items()
            if s["type"] == "sample" and s["infer"].get("_deterministic")]


def _trace(model: Callable, *data, **kwargs):
    safe = improper_safe(init.init_to_uniform, True, data_dtype(data))
    with torch.no_grad():
        return prune_subsample_sites(poutine.trace(init.InitMessenger(safe)(model)).get_trace(*data, **kwargs))


def plate_nesting(model: Callable, *data, **kwargs) -> int:
    """How many plates nest at most in ``model`` (what Pyro's ``initialize_model`` would guess by sampling the
    prior, which improper priors cannot)."""
    tr = _trace(model, *data, **kwargs)
    return max((len(s["cond_indep_stack"]) for s in tr.nodes.values() if s["type"] == "sample"), default=0)


def data_dtype(data: tuple) -> torch.dtype:
    """The floating dtype of the first floating tensor of ``data`` (the default dtype without one)."""
    return next((d.dtype for d in data if isinstance(d, Tensor) and d.is_floating_point()), torch.get_default_dtype())


def improper_safe(strategy: Callable, uniform: bool, dtype: torch.dtype, radius: float = 2.0) -> Callable:
    """``strategy`` for sites that can sample, and for those that cannot (Pyro's ``ImproperUniform``, whose
    ``sample`` raises and on which every Pyro init strategy fails) a start from the support alone: uniform
    in ``(-radius, radius)`` of the unconstrained space with ``uniform``, else its origin; values of ``dtype``.
    Discrete sites take a prior draw."""

    def init_fn(site=None):
        if site is None:
            return init_fn
        fn = site["fn"]
        if fn.support.is_discrete:  # no unconstrained space (MCMC refuses these; tracing only needs a value)
            return fn.sample().detach()
        try:
            return strategy(site)
        except NotImplementedError:
            to_support = torch.distributions.transform_to(fn.support)
            shape = to_support.inverse_shape(fn.batch_shape + fn.event_shape)
            u = (torch.rand(shape, dtype=dtype) * 2 - 1) * radius if uniform else torch.zeros(shape, dtype=dtype)
            value = to_support(u)
            value._pyro_custom_init = False
            return value

    return init_fn


def check_data(target: Autoencoder | Callable, *data: Tensor) -> None:
    """Raise ``ValueError`` for NaNs, or (for an autoencoder) data its model does not accept."""
    for d in data:
        if isinstance(d, Tensor) and torch.is_floating_point(d) and torch.isnan(d).any():
            raise ValueError(f"the data contain NaN at {int(torch.isnan(d).sum())} entries; impute or drop them")
    if isinstance(target, Autoencoder):
        target.validate(*data)


@dataclass(frozen=True)
class McmcEngine:
    """Fields shared by the MCMC engines; subclasses implement :meth:`run_chain`.

    Attributes:
        num_samples: draws ``S`` kept per chain (after thinning where the engine thins).
        warmup_steps: adaptation / burn-in steps per chain, discarded.
        num_chains: chains ``C``, run sequentially; at least 2 for a meaningful R-hat.
        seed: chain ``c`` is seeded with ``seed + c``.
        progress: show a progress bar per chain.
        init_strategy: where chains start, a key of :data:`INIT_STRATEGIES` (Pyro's ``init_to_*``; ``uniform``,
            Pyro's default, draws each site uniformly in (-2, 2) of its unconstrained space).
        init_values: site -> starting value (a number or nested list in the site's constrained space), Pyro's
            ``init_to_value``; the other sites follow ``init_strategy``.
    """

    num_samples: int = 500
    warmup_steps: int = 500
    num_chains: int = 4
    seed: int = 0
    progress: bool = True
    init_strategy: str = "uniform"
    init_values: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        integer("num_samples", self.num_samples)
        integer("warmup_steps", self.warmup_steps, minimum=0)
        integer("num_chains", self.num_chains)
        integer("seed", self.seed, minimum=0)
        if self.init_strategy not in INIT_STRATEGIES:
            raise ValueError(f"unknown init_strategy {self.init_strategy!r}; choose one of {sorted(INIT_STRATEGIES)}")

    def init_fn(self, dtype: torch.dtype | None = None) -> Callable:
        """Pyro's per-site init strategy these fields name, safe for improper priors (values of ``dtype``)."""
        dtype = dtype or torch.get_default_dtype()
        strategy = improper_safe(INIT_STRATEGIES[self.init_strategy], self.init_strategy == "uniform", dtype)
        if not self.init_values:
            return strategy
        values = {k: torch.as_tensor(v, dtype=dtype) for k, v in self.init_values.items()}
        return init.init_to_value(values=values, fallback=strategy)

    def check(self, target: Autoencoder | Callable, *data: Tensor) -> None:
        """Raise ``ValueError`` ("does not apply") when the model has no latent site to sample."""
        sites = latent_sites(model_of(target), *data)
        if not sites:
            raise ValueError(f"{type(self).__name__} does not apply: the model has no latent sample sites")
        if getattr(model_of(target), "stochastic_potential", False):  # e.g. sgp_bae: a fresh code draw per call
            raise ValueError(f"{type(self).__name__} does not apply: the model's log density is a Monte Carlo "
                             "estimate (it draws inside the model), which exact-gradient MCMC cannot use; use sghmc")
        discrete = sorted(n for n, s in sites.items() if s["fn"].support.is_discrete)
        if discrete:
            raise ValueError(f"{type(self).__name__} does not apply to discrete latent sites {discrete}: it needs "
                             "continuous latents (marginalise them in the model, or use svi with elbo=traceenum)")

    def run_chain(self, model: Callable, data: tuple[Tensor, ...], chain: int,
                  checkpoint: Callable[[dict], None], resume: dict | None) -> tuple[Draws, Draws]:
        """Run one chain; ``(draws, stats)`` with ``(S, ...)`` draws and ``(S,)`` per-draw stats.

        ``checkpoint(state)`` may be called with a picklable dict of tensors to save progress
        inside the chain; ``resume`` is the last such dict when the fit resumes, else ``None``.
        """
        raise NotImplementedError

    def run_chains(self, model: Callable, data: tuple, state: dict, save: Callable[[dict | None], None]) -> None:
        """Run the chains ``len(state["chains"]) .. num_chains - 1`` one after another, appending
        ``{"draws", "stats", "seconds"}`` to ``state["chains"]`` and calling ``save(None)`` after each."""
        for c in range(len(state["chains"]), self.num_chains):
            resume = state.pop("in_chain", None)
            state["in_chain"] = None
            if resume is None:
                pyro.set_rng_seed(self.seed + c)
            start = time.perf_counter()
            with pyro.validation_enabled(False):  # as in Pyro's MCMC: check() above traced with validation on
                draws, stats = self.run_chain(model, data, c, save, resume)
            seconds = time.perf_counter() - start + (resume or {}).get("seconds", 0.0)
            state["chains"].append({"draws": draws, "stats": stats, "seconds": seconds})
            save(None)

    def fit(
        self,
        target: Autoencoder | Callable,
        *data: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        checkpoint: str | Path | None = None,
        **model_kwargs: Any,
    ) -> FitResult:
        """Sample the posterior of ``target``'s latent sites given ``data`` (full batch).

        Args:
            target: an autoencoder (its ``model``) or a Pyro model called as ``model(*data, **model_kwargs)``.
            data: ``x`` ``(N, D_x)`` then covariates, all used at every step (for a plain Pyro model, any
                arguments, tensors or constants).
            model_kwargs: keyword arguments of a plain Pyro model (data or constants).
            transform: applied once to ``x`` under the engine's seed (e.g. one binarization).
            checkpoint: saved after every chain (and inside SGHMC chains); resumed from if it exists,
                also with a larger ``num_chains`` (the finished chains are kept).

        Returns:
            ``FitResult`` with empty ``losses``, ``samples`` site -> ``(C, S, ...)`` and ``stats``.

        Raises:
            ValueError: NaNs or data the model rejects; a model without latent sites.
            RuntimeError: ``checkpoint`` is corrupt or belongs to a different engine config.
        """
        model = model_of(target)
        if isinstance(target, Autoencoder):
            if model_kwargs:
                raise ValueError(f"keyword arguments {sorted(model_kwargs)} apply to plain Pyro models; an "
                                 "autoencoder takes (x, *covariates)")
            data = target.prepare(*data)
        elif model_kwargs:
            target = model = functools.partial(model, **model_kwargs)
        if transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                data = (transform(data[0]), *data[1:])
        check_data(target, *data)
        self.check(target, *data)
        same = type(self).__name__ + repr({k: v for k, v in dataclasses.asdict(self).items()
                                           if k not in ("num_chains", "progress")})  # more chains may follow
        state = {"engine": same, "chains": [], "in_chain": None}
        if checkpoint is not None and Path(checkpoint).exists():
            state = load_checkpoint(checkpoint)
            if state.get("engine") != same:
                raise RuntimeError(f"checkpoint {checkpoint} was written by {state.get('engine')}, not {same}; "
                                   "use a new checkpoint file or the same settings (only num_chains may change)")

        def save(inner: dict | None) -> None:
            if checkpoint is not None:
                atomic_torch_save({**state, "in_chain": inner}, checkpoint)

        self.run_chains(model, data, state, save)
        chains = state["chains"][: self.num_chains]
        samples = {k: torch.stack([ch["draws"][k] for ch in chains]) for k in chains[0]["draws"]}
        samples.update(_deterministic_draws(model, data, samples))
        stats = {k: torch.stack([ch["stats"][k] for ch in chains]) for k in chains[0]["stats"]}
        stats["train_seconds"] = torch.tensor([ch["seconds"] for ch in chains])
        return FitResult(losses=torch.zeros(0), samples=samples, stats=stats, kind="posterior_draws")


def _deterministic_draws(model: Callable, data: tuple, samples: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each ``pyro.deterministic`` site of ``model`` at every draw: site -> ``(C, S, ...)``; empty without any."""
    names = deterministic_names(model, *data)
    if not names:
        return {}
    c, s = next(iter(samples.values())).shape[:2]
    out: dict[str, list[Tensor]] = {n: [] for n in names}
    with torch.no_grad():
        for i in range(c * s):
            draw = {k: v.reshape(c * s, *v.shape[2:])[i] for k, v in samples.items()}
            tr = poutine.trace(poutine.condition(model, draw)).get_trace(*data)
            for n in names:
                out[n].append(tr.nodes[n]["value"])
    return {n: torch.stack(v).reshape(c, s, *v[0].shape) for n, v in out.items()}


class FlatSpace:
    """The latent sites as one flat unconstrained vector ``(D,)``, and the way back to each site.

    Args:
        init: site -> unconstrained value (e.g. from Pyro's ``initialize_model``).
        transforms: site -> transform from the site's support to the real line (Pyro's).
    """

    def __init__(self, init: dict[str, Tensor], transforms: dict) -> None:
        self.names = list(init)
        self.shapes = [init[k].shape for k in self.names]
        self.sizes = [int(math.prod(s)) for s in self.shapes]
        self.transforms = transforms

    def flatten(self, values: dict[str, Tensor]) -> Tensor:
        return torch.cat([values[k].reshape(-1) for k in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Site -> unconstrained values for ``flat`` ``(..., D)``."""
        lead = flat.shape[:-1]
        return {k: v.reshape(lead + s) for k, v, s in zip(self.names, flat.split(self.sizes, -1), self.shapes)}

    def constrained(self, flat: Tensor) -> dict[str, Tensor]:
        """Site -> constrained values for unconstrained ``flat`` ``(..., D)``."""
        return {k: self.transforms[k].inv(u) if k in self.transforms else u for k, u in self.unflatten(flat).items()}
