"""Shared fixtures: seeded, validated Pyro state per test, the device, tiny model builders."""

from __future__ import annotations

import dataclasses
import os

import pyro
import pytest
import torch

from aezoo.inference import ENGINES
from aezoo.models import MODELS

# Tiny sizes for the contract matrix; a model missing here is built from its default Config.
_SMALL_VAE = {"x_dim": 12, "z_dim": 2, "hidden_dims": (8,)}
_SMALL_SEQUENCE = {"x_dim": 6, "z_dim": 2, "hidden_dims": (8,), "seq_len": 5}  # data (B, T=5, 6)
SMALL_CONFIGS: dict[str, dict] = {
    **{name: _SMALL_VAE for name in ("vae", "info_vae", "wae", "swae")},
    "linear_gaussian": {"x_dim": 4, "z_dim": 2},
    "gmvae": {**_SMALL_VAE, "num_components": 3},
    "bayesian_ae": {"x_dim": 12, "z_dim": 2, "hidden_dims": (4,)},
    **{name: _SMALL_SEQUENCE for name in ("svae", "gp_vae", "markov_gp_vae")},
    "gppvae": {**_SMALL_VAE, "num_inducing": 4},
    "sgp_bae": {"x_dim": 12, "z_dim": 2, "hidden_dims": (4,), "num_inducing": 4},
    "vamp_vae": {**_SMALL_VAE, "num_pseudo": 3},
    "vlae": {**_SMALL_VAE, "prior_flows": 1, "prior_hidden": 8},
    "m2": {**_SMALL_VAE, "num_classes": 3},
    "hvae": {"x_dim": 12, "z1_dim": 3, "z2_dim": 2, "hidden1": (8,), "hidden2": (6,)},
    "cvae": {**_SMALL_VAE, "c_dim": 3},
    "mvae": {"x_dim": 12, "x2_dim": 10, "num_classes": 3, "z_dim": 2, "hidden_dims": (8,)},
    **{name: {"num_nodes": 6, "z_dim": 2, "hidden_dims": (4,)} for name in ("vgae", "gae")},  # graphs (B, 6, 6)
    "dmm": {"x_dim": 6, "z_dim": 2, "emission_dim": 8, "transition_dim": 8, "rnn_dim": 8, "seq_len": 5},
    "gumbel_vae": {"x_dim": 12, "num_latents": 2, "num_classes": 3, "hidden_dims": (8,)},
    "joint_vae": {**_SMALL_VAE, "num_discrete": 2, "num_classes": 3},
    "vq_vae": {"x_dim": 16, "image_shape": (4, 4), "channels": (4,), "code_dim": 3, "num_codes": 5,
               "prior_channels": 4, "prior_layers": 1},  # a 2 x 2 code grid
    "qlae": {**_SMALL_VAE, "num_values": 4},
    "dae": {**_SMALL_VAE, "noise_scale": 0.5},
    "cae": _SMALL_VAE,
    **{name: _SMALL_VAE for name in ("gon", "unscented_ae")},
    "coupled_vae": _SMALL_VAE,
    "wae_gan": {**_SMALL_VAE, "critic_dims": (4,)},
    "koopman_vae": {"x_dim": 3, "z_dim": 2, "hidden_dim": 4, "hidden_dims": (4,), "seq_len": 5},
    "k_sparse_ae": {"x_dim": 12, "z_dim": 8, "k": 2, "k_start": 6, "k_schedule_epochs": 1},
    "pv_rnn": {"hidden_dim": 8, "seq_len": 5, "num_data": 32},  # data (B, T=5, 2); 32 adaptive vectors
}
# Engine settings for one quick epoch (or a few MCMC draws); only fields an engine has are applied.
SMALL_ENGINE = {"epochs": 1, "batch_size": 8, "lr": 1e-2, "progress": False,
                "num_samples": 6, "warmup_steps": 6, "num_chains": 2, "max_tree_depth": 3, "num_steps": 3}


def pytest_configure(config: pytest.Config) -> None:
    # The suite's tensors are tiny: intra-op threads only add contention on a shared 2-core
    # runner (measured: the same fit took 1 s with one thread, up to 50 s with two under load).
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def pyro_state():
    """Seed, empty param store, validation on, module-local params (trap 4); restored afterwards."""
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    with pyro.validation_enabled(True), pyro.settings.context(module_local_params=True):
        yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def device() -> torch.device:
    """``AEZOO_DEVICE`` (default ``cpu``): ``AEZOO_DEVICE=cuda pytest`` reruns the suite on a GPU."""
    dev = torch.device(os.environ.get("AEZOO_DEVICE", "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("AEZOO_DEVICE asks for CUDA, which is not available")
    return dev


def small_config(name: str, **overrides):
    module = MODELS[name]
    return dataclasses.replace(module.Config(), **{**SMALL_CONFIGS.get(name, {}), **overrides})


def skip_unless_applies(eng, ae, *data) -> None:
    """``pytest.skip`` when the engine's ``check`` says it "does not apply" to ``ae``; other errors propagate."""
    try:
        eng.check(ae, *data)
    except ValueError as err:
        if "does not apply" not in str(err):
            raise
        pytest.skip(str(err))


def small_engine(name: str, model: str | None = None, **overrides):
    """Engine ``name`` for one quick epoch; with ``model``, its ``DEFAULT_ENGINE`` settings when that names ``name``."""
    cls = ENGINES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    default, settings = getattr(MODELS[model], "DEFAULT_ENGINE", ("svi", {})) if model else (None, {})
    settings = {k: v for k, v in settings.items() if k != "epochs"}  # the objective, not the length of training
    chosen = {**SMALL_ENGINE, **(settings if default == name else {}), **overrides}
    return cls(**{k: v for k, v in chosen.items() if k in fields})


@pytest.fixture
def tiny(device):
    """``tiny(name, n=20, seed=0, **cfg)`` -> ``(ae, data)``: small model and example data on ``device``."""

    def make(name: str, n: int = 20, seed: int = 0, **cfg_overrides):
        module = MODELS[name]
        cfg = small_config(name, **cfg_overrides)
        torch.manual_seed(seed)
        ae = module.build(cfg).to(device)
        data = tuple(d.to(device) for d in module.example_data(cfg, n, seed=seed))
        return ae, data

    return make


@pytest.fixture
def engine():
    """``engine(name, model=None, **fields)``: an engine instance set up for one quick epoch."""
    return small_engine


@pytest.fixture
def linear_gaussian(device):
    """``linear_gaussian(n, x_dim=5, z_dim=2, seed=0)`` -> ``(ae, x)`` in float64 with a random W and mu."""
    module = MODELS["linear_gaussian"]

    def make(n: int, x_dim: int = 5, z_dim: int = 2, seed: int = 0):
        cfg = module.Config(x_dim=x_dim, z_dim=z_dim)
        torch.manual_seed(seed)
        ae = module.build(cfg).double()
        with torch.no_grad():  # away from the near-zero initial W so the tests are not degenerate
            ae.model.W.normal_()
            ae.model.mu.normal_()
        x = module.example_data(cfg, n, seed=seed + 1)[0].double()
        return ae.to(device), x.to(device)

    return make
