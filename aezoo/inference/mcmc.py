"""What the MCMC engines (``nuts``, ``hmc``, ``sghmc``) share: the chain loop, checkpoints, results.

An MCMC engine samples the posterior of every latent ``pyro.sample`` site of a Pyro model given
the data; network parameters (``pyro.param`` / ``nn.Parameter``) are held fixed and are never
changed. The model is an :class:`~aezoo.core.Autoencoder` (its ``model`` is used) or any Pyro
model called as ``model(*data)``. Chains run one after another in-process (Pyro's trap with
multi-process chains and CUDA is avoided), each seeded with ``seed + chain``; after each chain
the draws so far are written atomically to ``checkpoint``, and a fit that finds that file
resumes after the last finished chain (SGHMC also checkpoints inside a chain).

Results follow :class:`~aezoo.core.FitResult`: ``samples`` maps each site to ``(C, S,
*site_shape)`` draws in the site's own (constrained) space; ``stats`` holds per-draw ``(C, S)``
statistics where the kernel has them (``diverging``, ``accept_prob``, ``step_size``,
``num_steps``, ``energy``) and ``train_seconds`` ``(C,)``, warm-up included.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from aezoo.core import Autoencoder, FitResult, atomic_torch_save, load_checkpoint

Draws = dict[str, Tensor]  # site -> (S, *site_shape) for one chain


def model_of(target: Autoencoder | Callable) -> Callable:
    """The Pyro model an MCMC engine samples: ``ae.model`` for an autoencoder, else ``target`` itself."""
    return target.model if isinstance(target, Autoencoder) else target


def latent_sites(model: Callable, *data: Tensor, **kwargs: Any) -> dict[str, dict]:
    """Latent (unobserved, non-subsample) sample sites of one trace of ``model(*data, **kwargs)``."""
    with torch.no_grad():
        tr = prune_subsample_sites(poutine.trace(model).get_trace(*data, **kwargs))
    return {name: site for name, site in tr.nodes.items() if site["type"] == "sample" and not site["is_observed"]}


def check_data(target: Autoencoder | Callable, *data: Tensor) -> None:
    """Raise ``ValueError`` for NaNs, or (for an autoencoder) data its model does not accept."""
    for d in data:
        if d is not None and torch.is_floating_point(d) and torch.isnan(d).any():
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
    """

    num_samples: int = 500
    warmup_steps: int = 500
    num_chains: int = 4
    seed: int = 0
    progress: bool = True

    def check(self, target: Autoencoder | Callable, *data: Tensor) -> None:
        """Raise ``ValueError`` ("does not apply") when the model has no latent site to sample."""
        sites = latent_sites(model_of(target), *data)
        if not sites:
            raise ValueError(f"{type(self).__name__} does not apply: the model has no latent sample sites")
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

    def fit(
        self,
        target: Autoencoder | Callable,
        *data: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        checkpoint: str | Path | None = None,
    ) -> FitResult:
        """Sample the posterior of ``target``'s latent sites given ``data`` (full batch).

        Args:
            target: an autoencoder (its ``model``) or a Pyro model called as ``model(*data)``.
            data: ``x`` ``(N, D_x)`` then covariates, all used at every step.
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
        if transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                data = (transform(data[0]), *data[1:])
        check_data(target, *data)
        self.check(target, *data)
        same = repr(dataclasses.replace(self, num_chains=0, progress=False))  # more chains may follow
        state = {"engine": same, "chains": [], "in_chain": None}
        if checkpoint is not None and Path(checkpoint).exists():
            state = load_checkpoint(checkpoint)
            if state.get("engine") != same:
                raise RuntimeError(f"checkpoint {checkpoint} was written by {state.get('engine')}, not {same}; "
                                   "use a new checkpoint file or the same settings (only num_chains may change)")

        def save(inner: dict | None) -> None:
            if checkpoint is not None:
                atomic_torch_save({**state, "in_chain": inner}, checkpoint)

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
        chains = state["chains"][: self.num_chains]
        samples = {k: torch.stack([ch["draws"][k] for ch in chains]) for k in chains[0]["draws"]}
        stats = {k: torch.stack([ch["stats"][k] for ch in chains]) for k in chains[0]["stats"]}
        stats["train_seconds"] = torch.tensor([ch["seconds"] for ch in chains])
        return FitResult(losses=torch.zeros(0), samples=samples, stats=stats, kind="posterior_draws")


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
