"""The contract every model x engine pair keeps, at tiny sizes; ids are registry keys, e.g. [vae-svi]."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import pkgutil
import re
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

import aezoo.inference
import aezoo.models
from aezoo.core import Autoencoder, FitResult, save
from aezoo.inference import ENGINES
from aezoo.inference.mcmc import McmcEngine
from aezoo.models import MODELS, load
from tests.conftest import skip_unless_applies

MATRIX = [pytest.param(m, e, id=f"{m}-{e}") for m, e in itertools.product(sorted(MODELS), sorted(ENGINES))]
matrix = pytest.mark.parametrize("model_name, engine_name", MATRIX)
each_model = pytest.mark.parametrize("model_name", sorted(MODELS))
each_engine = pytest.mark.parametrize("engine_name", sorted(ENGINES))


@pytest.fixture(autouse=True)
def skip_pairs_that_do_not_apply(request, tiny, engine):
    """Skip a model x engine pair whose engine's ``check`` raises ``ValueError`` saying "does not apply"."""
    names = getattr(getattr(request.node, "callspec", None), "params", {})
    if "model_name" not in names or "engine_name" not in names:
        return
    eng = engine(names["engine_name"], model=names["model_name"])
    if not hasattr(eng, "check"):
        return
    with torch.random.fork_rng():
        ae, data = tiny(names["model_name"], n=8)
        skip_unless_applies(eng, ae, *data)


def traces(ae: Autoencoder, *data: torch.Tensor, num_data: int | None = None):
    """Guide trace and the model trace replayed on it, subsample sites removed; ``data`` is ``(x, *covariates)``."""
    guide_tr = poutine.trace(ae.guide).get_trace(*data, num_data=num_data)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(*data, num_data=num_data)
    return prune_subsample_sites(guide_tr), prune_subsample_sites(model_tr)


def sample_sites(tr) -> dict:
    """Sample sites, without an autoguide's auxiliary (unconstrained) ones."""
    return {n: s for n, s in tr.nodes.items() if s["type"] == "sample" and not s["infer"].get("is_auxiliary")}


def seeded_loss(engine, ae: Autoencoder, data: tuple, num_data: int, seed: int = 1) -> torch.Tensor:
    if not hasattr(engine, "loss"):
        pytest.skip(f"{type(engine).__name__} has no loss (not an optimisation engine)")
    engine.loss(ae, *data, num_data=num_data)  # warm-up: caches (e.g. plate nesting) may draw random numbers
    pyro.set_rng_seed(seed)
    return engine.loss(ae, *data, num_data=num_data).detach()


# -- registries ---------------------------------------------------------------------------------


def test_every_model_file_is_registered():
    files = {p.stem for p in Path(aezoo.models.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert files == set(MODELS)


def test_every_engine_module_is_registered():
    found = {}
    for info in pkgutil.iter_modules(aezoo.inference.__path__):
        module = importlib.import_module(f"aezoo.inference.{info.name}")
        if hasattr(module, "ENGINE"):
            found[info.name] = module.ENGINE
    assert found == ENGINES


@each_model
def test_model_module_exports(model_name, tiny):
    module = MODELS[model_name]
    assert dataclasses.is_dataclass(module.Config) and module.Config.__dataclass_params__.frozen
    ae, data = tiny(model_name)
    assert isinstance(ae, Autoencoder) and ae.name == model_name
    assert ae.config == module.Config(**dataclasses.asdict(ae.config))
    assert all(isinstance(d, torch.Tensor) and len(d) == 20 for d in data)
    # example_data returns x then exactly the declared covariates, and the module declares what its pair takes
    assert len(data) == 1 + len(ae.covariates)
    assert ae.covariates == tuple(getattr(module, "COVARIATES", ()))
    assert len(set(ae.covariate_names)) == len(ae.covariates) and "x" not in ae.covariate_names


# -- model and guide agree ----------------------------------------------------------------------


def in_data_plate(site: dict) -> bool:
    return any(f.name == "data" for f in site["cond_indep_stack"])


@each_model
def test_site_names_and_shapes(model_name, tiny):
    ae, data = tiny(model_name, n=6)
    x = data[0]
    guide_tr, model_tr = traces(ae, *data)
    sites = sample_sites(model_tr)
    observed = {n for n, s in sites.items() if s["is_observed"]}
    latent = set(sites) - observed
    local = {n for n in latent if in_data_plate(sites[n])}  # the rest are global (e.g. Bayesian weights)
    assert "x" in observed and all(n.startswith("x") or n in ae.covariate_names for n in observed)  # M2 observes y
    # local latents are z...; a covariate is a latent only where the data lack it (M2's unlabelled data)
    assert latent and all(n.startswith("z") or n in ae.covariate_names for n in local)
    assert latent == set(sample_sites(guide_tr)), "model and guide must sample the same latents"
    assert sites["x"]["value"].shape == x.shape
    z_dim = getattr(ae.config, "z_dim", None)
    for name in local:
        assert sites[name]["value"].shape[0] == len(x)
        if z_dim is not None and name == "z":  # (B, D_z); sequence data (B, T, D_x) have z (B, T, D_z)
            assert sites[name]["value"].shape == (*x.shape[:-1], z_dim)
    for name in observed | local:
        for site in (sites[name], sample_sites(guide_tr).get(name)):
            if site is not None:
                assert site["fn"].batch_shape[-1:] == (len(x),), "observed and local sites live in the 'data' plate"
    for name in latent - local:
        assert not in_data_plate(sample_sites(guide_tr)[name]), "a global latent is global in the guide too"


@each_model
def test_model_and_guide_scale_a_minibatch_alike(model_name, tiny):
    # Trap 8: num_data in one of model/guide but not the other is a silent bias.
    ae, data = tiny(model_name, n=5)
    num_data = 40
    guide_tr, model_tr = traces(ae, *data, num_data=num_data)
    x = data[0]
    for tr in (guide_tr, model_tr):
        for name, site in sample_sites(tr).items():
            assert site["scale"] == (num_data / len(x) if in_data_plate(site) else 1.0), name


# -- fitting -------------------------------------------------------------------------------------


@matrix
def test_one_epoch_fits(model_name, engine_name, tiny, engine):
    ae, data = tiny(model_name)
    eng = engine(engine_name, model=model_name)
    result = eng.fit(ae, *data)
    assert isinstance(result, FitResult)
    if isinstance(eng, McmcEngine):  # draws (C, S, *site_shape) of every latent site, no losses
        _, model_tr = traces(ae, *data)
        latent = {n: s for n, s in sample_sites(model_tr).items() if not s["is_observed"]}
        assert result.losses.numel() == 0 and set(result.samples) == set(latent)
        for name, site in latent.items():
            assert result.samples[name].shape == (eng.num_chains, eng.num_samples, *site["value"].shape), name
            assert torch.isfinite(result.samples[name]).all()
        assert result.stats["train_seconds"].shape == (eng.num_chains,)
        return
    assert result.losses.shape == (eng.epochs,)
    assert torch.isfinite(result.losses).all()


@matrix
def test_every_parameter_changes(model_name, engine_name, tiny, engine):
    # Trap 2: a module whose parameters never reach the loss silently does not train.
    # MCMC engines sample latent sites only: they must leave every network weight untouched.
    ae, data = tiny(model_name)
    before = {n: p.detach().clone() for n, p in ae.named_parameters() if p.requires_grad}
    assert before
    eng = engine(engine_name, model=model_name)
    eng.fit(ae, *data)
    after = dict(ae.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach())]
    if isinstance(eng, McmcEngine):
        assert unchanged == list(before)
        assert all(p.grad is None for p in ae.parameters())
    else:
        assert not unchanged


@matrix
def test_loss_is_per_datum_whatever_num_data(model_name, engine_name, tiny, engine):
    # With num_data = N the minibatch is scaled by N / B; the loss is per datum, so it must not
    # move with N (it does when model and guide disagree on the plate scale).
    # With global latents (Bayesian weights) the per-datum loss is A + G / N: their KL is paid
    # once per data set; then the loss must be affine in 1 / N with the same slope everywhere.
    ae, data = tiny(model_name, n=8)
    x = data[0]
    eng = engine(engine_name, model=model_name)
    small, large = seeded_loss(eng, ae, data, num_data=len(x)), seeded_loss(eng, ae, data, num_data=1000)
    assert torch.isfinite(large)
    _, model_tr = traces(ae, *data)
    if all(in_data_plate(s) for s in sample_sites(model_tr).values()):
        torch.testing.assert_close(large, small, rtol=1e-5, atol=1e-6)
        return
    middle = seeded_loss(eng, ae, data, num_data=100)
    slope = (small - large) / (1 / len(x) - 1 / 1000)
    torch.testing.assert_close((middle - large) / (1 / 100 - 1 / 1000), slope, rtol=1e-4, atol=1e-4)
    assert slope > 0  # the KL of the global latents


@matrix
def test_resume_continues_the_same_run(model_name, engine_name, tiny, engine, tmp_path):
    ckpt = tmp_path / "fit.pt"
    if isinstance(engine(engine_name, model_name), McmcEngine):  # the chains finished before are kept
        ae, data = tiny(model_name, n=10)
        first = engine(engine_name, model_name, num_chains=1).fit(ae, *data, checkpoint=ckpt)
        resumed = engine(engine_name, model_name, num_chains=2).fit(ae, *data, checkpoint=ckpt)
        at_once = engine(engine_name, model_name, num_chains=2).fit(ae, *data)
        for name, draws in at_once.samples.items():
            assert torch.equal(resumed.samples[name][:1], first.samples[name]), name
            assert torch.equal(resumed.samples[name], draws), name
        return
    ae, data = tiny(model_name, n=24)
    first = engine(engine_name, model_name, epochs=2).fit(ae, *data, checkpoint=ckpt)
    other, _ = tiny(model_name, n=24, seed=5)  # a fresh process: different weights until resumed
    resumed = engine(engine_name, model_name, epochs=4).fit(other, *data, checkpoint=ckpt)
    assert resumed.losses.shape == (4,)
    assert torch.equal(resumed.losses[:2], first.losses)

    straight, _ = tiny(model_name, n=24)
    at_once = engine(engine_name, model_name, epochs=4).fit(straight, *data)
    assert torch.equal(at_once.losses, resumed.losses)
    for (name, a), b in zip(straight.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name


@matrix
def test_save_load_reproduces_the_loss(model_name, engine_name, tiny, engine, tmp_path, device):
    ae, data = tiny(model_name)
    eng = engine(engine_name, model=model_name)
    eng.fit(ae, *data)
    save(ae, tmp_path / "run")
    loaded = load(tmp_path / "run", device=device)
    assert loaded.name == ae.name and loaded.config == ae.config
    n = len(data[0])
    assert torch.equal(seeded_loss(eng, loaded, data, n), seeded_loss(eng, ae, data, n))


# -- errors ---------------------------------------------------------------------------------------


@matrix
def test_fit_rejects_bad_data(model_name, engine_name, tiny, engine):
    ae, (x, *rest) = tiny(model_name)
    eng = engine(engine_name, model=model_name)
    narrow = x[..., :-1]  # x is (B, ..., D_x): one feature short, the other axes (e.g. time) kept
    with pytest.raises(ValueError, match="shape") as err:
        eng.fit(ae, narrow, *rest)
    # the message states the expected shape, e.g. (B, 12) or (B, T, 12), and the shape it got
    expected = f"(B, {x.shape[1]})" if x.dim() == 2 else re.compile(rf"\(B, [^()]*\b{x.shape[-1]}\)")
    message = str(err.value)
    assert (expected in message if isinstance(expected, str) else expected.search(message)), message
    assert str(tuple(narrow.shape)) in message
    nan = x.clone()
    nan[(3, *[0] * (x.dim() - 2), 1)] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        eng.fit(ae, nan, *rest)


@each_engine
def test_bernoulli_vae_rejects_non_binary_data(engine_name, tiny, engine):
    ae, (x,) = tiny("vae", likelihood="bernoulli")
    assert ((x == 0) | (x == 1)).all()
    with pytest.raises(ValueError, match="binary"):
        engine(engine_name).fit(ae, 0.5 * x + 0.25)


def test_corrupt_checkpoint_is_reported(tiny, engine, tmp_path):
    ae, data = tiny("vae")
    run = save(ae, tmp_path / "run")
    (run / "checkpoint.pt").write_bytes(b"\x00garbage, not a torch file" * 10)
    with pytest.raises(RuntimeError, match="corrupt"):
        load(run)
    with pytest.raises(RuntimeError, match="corrupt"):
        engine("svi").fit(ae, *data, checkpoint=run / "checkpoint.pt")


# -- covariates ------------------------------------------------------------------------------------


COVARIATE_CASES = [pytest.param(m, c.name, id=f"{m}-{c.name}") for m in sorted(MODELS)
                   for c in getattr(MODELS[m], "COVARIATES", ())]


@pytest.mark.parametrize("model_name, covariate", COVARIATE_CASES)
def test_a_missing_covariate_is_sampled_defaulted_or_named(model_name, covariate, tiny, engine):
    # The contract (Pyro's contrib/cevae): a covariate passed as None is sampled (a latent site of
    # its name in model and guide), replaced by its documented default (the model still runs), or
    # refused with a ValueError naming it; `required` says which.
    ae, data = tiny(model_name, n=6)
    spec = next(c for c in ae.covariates if c.name == covariate)
    i = 1 + ae.covariate_names.index(covariate)
    missing = (*data[:i], None, *data[i + 1:])
    if spec.required:
        with pytest.raises(ValueError, match=f"'{covariate}'"):
            ae.validate(*missing)
            traces(ae, *missing)
        return
    ae.validate(*missing)
    guide_tr, model_tr = traces(ae, *missing)
    if covariate in sample_sites(model_tr):  # sampled: a latent site in both, inside the data plate
        assert not model_tr.nodes[covariate]["is_observed"] and covariate in sample_sites(guide_tr)
        assert model_tr.nodes[covariate]["value"].shape[0] == len(data[0])
    log_p = model_tr.log_prob_sum()
    assert torch.isfinite(log_p)
