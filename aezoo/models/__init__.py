"""The zoo: one module per entry; the registry key is the module name.

Each module exports ``Config`` (frozen dataclass), ``build(cfg) -> Autoencoder`` and
``example_data(cfg, n, seed) -> tuple[Tensor, ...]``; its docstring's first line is its
description in ``aezoo list``. An optional ``DEFAULT_ENGINE = (engine key, {field: value})`` is
the objective ``aezoo fit`` uses when no ``--engine`` is given (otherwise ``svi``). A model
with covariates declares them as ``COVARIATES`` (:class:`aezoo.core.Covariate`), passes them to
its ``Autoencoder`` and returns them from ``example_data`` after ``x``, in that order.

:func:`load` rebuilds a saved run through this registry (re-exported as ``aezoo.load``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import torch

from aezoo.core import CHECKPOINT_FILE, CONFIG_FILE, Autoencoder, config_from_dict, load_checkpoint
from aezoo.models import (
    bayesian_ae,
    cae,
    coupled_vae,
    cvae,
    dae,
    dmm,
    gae,
    gmvae,
    gon,
    gp_vae,
    gppvae,
    gumbel_vae,
    hvae,
    info_vae,
    joint_vae,
    k_sparse_ae,
    koopman_vae,
    linear_gaussian,
    m2,
    markov_gp_vae,
    mvae,
    pv_rnn,
    qlae,
    sgp_bae,
    svae,
    swae,
    unscented_ae,
    vae,
    vamp_vae,
    vgae,
    vlae,
    vq_vae,
    vssm,
    wae,
    wae_gan,
)

_MODULES: list[ModuleType] = [linear_gaussian, vae, info_vae, wae, swae, gmvae, bayesian_ae, svae, gp_vae,
                              markov_gp_vae, dmm, gppvae, sgp_bae, cvae, hvae, vamp_vae, m2, vlae, vgae, gae,
                              mvae, vq_vae, qlae, k_sparse_ae, gumbel_vae, joint_vae, dae, cae,
                              coupled_vae, wae_gan,
                              gon, unscented_ae, pv_rnn, koopman_vae, vssm]

MODELS: dict[str, ModuleType] = {m.__name__.rsplit(".", 1)[-1]: m for m in _MODULES}



def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """Rebuild the autoencoder of a run folder written by :func:`aezoo.core.save` or ``aezoo fit``.

    Raises:
        FileNotFoundError: the folder has no ``config.json`` or ``checkpoint.pt``.
        ValueError: ``config.json`` is not valid JSON or names an unknown model.
        RuntimeError: a corrupt checkpoint, or one that does not match the config.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        spec = json.loads(cfg_path.read_text())["model"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{cfg_path} is corrupt ({err}); delete the run folder and fit again") from err
    if spec["name"] not in MODELS:
        raise ValueError(f"unknown model {spec['name']!r} in {cfg_path}; known: {sorted(MODELS)}")
    module = MODELS[spec["name"]]
    ae = module.build(config_from_dict(module.Config, spec["config"]))
    state = load_checkpoint(run_dir / CHECKPOINT_FILE)
    try:
        ae.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise RuntimeError(f"checkpoint in {run_dir} does not match its config.json: {err}") from err
    return ae.to(device)


__all__ = ["MODELS", "load"]
