"""What applies to what: for each model, the datasets and engines ``aezoo list`` and ``aezoo fit`` accept.

A dataset applies to a model when its layout (vectors ``(N, D_x)``, sequences ``(N, T, D_x)`` or
graphs ``(N, V, V)``, for a model with a covariate of kind ``graph``) is the model's and it
provides every covariate the model requires. An engine applies when its ``check`` (with the
model's ``DEFAULT_ENGINE`` settings for that engine) accepts the model on the model's own example
data and, for an MCMC engine, the model's latents are all global (the command line does not
sample the local ``z`` of every datum).
"""

from __future__ import annotations

import functools

import torch

from aezoo.data import DATASETS
from aezoo.inference import ENGINES
from aezoo.inference.mcmc import McmcEngine, latent_sites
from aezoo.models import MODELS


def local_latents(ae, *data) -> list[str]:
    """The model's latent sites inside the ``"data"`` plate, traced on the first two data."""
    first = [None if d is None else d[:2] for d in data]
    return sorted(n for n, site in latent_sites(ae.model, *first).items()
                  if any(f.name == "data" for f in site["cond_indep_stack"]))


@functools.cache
def applicable(model: str) -> tuple[list[str], list[str]]:
    """``(datasets, engines)``: the registry keys that apply to ``model`` with its default config."""
    module = MODELS[model]
    cfg = module.Config()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ae = module.build(cfg)
        data = module.example_data(cfg, 4, seed=0)
    graph = any(c.kind == "graph" for c in ae.covariates)
    layout = "graphs" if graph else "sequences" if data[0].dim() == 3 else "vectors"
    required = {c.name for c in ae.covariates if c.required}
    names = [k for k, s in DATASETS.items()
             if k == "synthetic" or (s.layout == layout and required <= set(s.covariates))]
    default, fields = getattr(module, "DEFAULT_ENGINE", ("svi", {}))
    engines = []
    for key, cls in ENGINES.items():
        engine = cls(progress=False, **(fields if key == default else {}))
        try:
            with torch.random.fork_rng():
                engine.check(ae, *data)
        except ValueError:
            continue
        if isinstance(engine, McmcEngine) and local_latents(ae, *data):
            continue
        engines.append(key)
    return names, engines
