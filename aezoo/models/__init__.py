"""The zoo: one module per entry; the registry key is the module name.

Each module exports ``Config`` (frozen dataclass), ``build(cfg) -> Autoencoder`` and
``example_data(cfg, n, seed) -> tuple[Tensor, ...]``; its docstring's first line is its
description in ``aezoo list``. An optional ``DEFAULT_ENGINE = (engine key, {field: value})`` is
the objective ``aezoo fit`` uses when no ``--engine`` is given (otherwise ``svi``).
"""

from types import ModuleType

from aezoo.models import (
    bayesian_ae,
    dmm,
    gmvae,
    gp_vae,
    gppvae,
    info_vae,
    linear_gaussian,
    markov_gp_vae,
    sgp_bae,
    svae,
    swae,
    vae,
    wae,
)

_MODULES: list[ModuleType] = [linear_gaussian, vae, info_vae, wae, swae, gmvae, bayesian_ae, svae, gp_vae,
                              markov_gp_vae, dmm, gppvae, sgp_bae]

MODELS: dict[str, ModuleType] = {m.__name__.rsplit(".", 1)[-1]: m for m in _MODULES}

__all__ = ["MODELS"]
