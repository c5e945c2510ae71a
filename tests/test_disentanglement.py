"""Disentanglement metrics on codes with known answers, the sprites generator, and the metrics in a run's evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aezoo import data as datasets
from aezoo import runs
from aezoo.data import sprites
from aezoo.diagnostics import disentanglement as dm

SIZES = (3, 6, 10, 8)  # values per factor, as sprites' shape, scale, orientation, position
N = 1000
BINS = 20


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(k, size=N) for k in SIZES], 1)


def noisy(factors: np.ndarray, seed: int = 1) -> np.ndarray:
    """One latent per factor: the factor's index plus noise far below the spacing of its values."""
    return factors + 0.01 * np.random.default_rng(seed).normal(size=factors.shape)


def plug_in_bias(n: int, sizes=SIZES, bins: int = BINS) -> float:
    """Miller-Madow: the plug-in MI of two independent discrete variables is about (B - 1)(K - 1) / 2n nats;
    the largest such bias relative to H(v_k) = log K_k (uniform factors) bounds the MIG of noise latents."""
    return max((bins - 1) * (k - 1) / (2 * n) / math.log(k) for k in sizes)


def test_a_code_equal_to_the_factors_scores_near_the_maximum(factors):
    found = dm.disentanglement(noisy(factors), factors).metrics
    # MIG: the right latent holds H(v_k); the runner-up is independent noise, biased up by the plug-in estimate
    # (3x the expected bias leaves room for its spread)
    assert found["mig"] >= 1 - 3 * plug_in_bias(N)
    assert found["sap"] >= 0.9  # the other latents score chance (0) +- the ~0.03 spread of 200 held-out data
    for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness", "infomec_explicitness"):
        assert found[key] >= 0.98, key
    assert found["factorvae_score"] >= 0.99  # the fixed factor's latent varies by 1e-4, the others by ~1
    assert found["infomec_modularity"] >= 0.95 and found["infomec_compactness"] >= 0.95


def test_a_random_code_scores_near_the_minimum(factors):
    codes = np.random.default_rng(2).normal(size=(N, len(SIZES)))
    found = dm.disentanglement(codes, factors)
    m = found.metrics
    assert m["mig"] <= 3 * plug_in_bias(N) / 2  # a gap between two noise estimates, not the estimates themselves
    assert m["sap"] <= 0.1 and m["dci_informativeness"] <= 0.05 and m["infomec_explicitness"] <= 0.05
    # chance of the majority vote is 1/F; 5,000 held-out votes put its standard error under 0.01
    assert abs(m["factorvae_score"] - 1 / len(SIZES)) <= 0.06
    assert np.max(found.details["infomec_nmi"]) <= 0.05  # InfoM / InfoC are ratios of these noise values
    # gradient-boosted importances spread over every noise latent: nothing concentrated
    gbt = dm.dci(codes[:300], factors[:300, :2], importance="gbt", stages=20)
    assert gbt["dci_disentanglement"] <= 0.1 and gbt["dci_informativeness"] <= 1 / SIZES[0] + 0.15


def test_reordering_and_rescaling_the_latents_keeps_the_scores(factors):
    codes = noisy(factors)
    perm = [2, 0, 3, 1]
    moved = codes[:, perm] * np.array([2.0, -1.0, 0.5, 3.0])
    before, after = dm.disentanglement(codes, factors).metrics, dm.disentanglement(moved, factors).metrics
    for key in dm.METRICS:  # MIG and SAP (and the rest) read each latent on its own and never its position
        assert after[key] == pytest.approx(before[key], abs=0.02), key


def test_mixing_the_factors_lowers_modularity_not_information(factors):
    standard = (factors - factors.mean(0)) / factors.std(0)
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2  # a rotation
    mixed = standard @ hadamard + 0.01 * np.random.default_rng(4).normal(size=factors.shape)  # each latent: all four
    clean = dm.disentanglement(noisy(factors), factors).metrics
    found = dm.disentanglement(mixed, factors).metrics
    for key in ("infomec_modularity", "dci_disentanglement", "mig"):
        assert found[key] <= clean[key] - 0.4, key
    # an invertible linear map keeps everything a linear read-out needs
    assert found["dci_informativeness"] >= 0.98 and found["infomec_explicitness"] >= 0.95


def test_metrics_are_seeded_and_skip_constant_factors(factors):
    codes = np.random.default_rng(5).normal(size=(300, 4)) + factors[:300] * [1, 0, 0, 0.5]
    first = dm.disentanglement(codes, factors[:300], seed=3).to_dict()
    assert dm.disentanglement(torch.as_tensor(codes), torch.as_tensor(factors[:300]), seed=3).to_dict() == first
    with_constant = np.concatenate([factors[:300], np.full((300, 1), 7)], 1)
    found = dm.disentanglement(codes, with_constant, names=("shape", "scale", "angle", "x", "colour"), seed=3)
    assert found.factors == ("shape", "scale", "angle", "x")  # the constant colour carries nothing: left out
    assert found.metrics == {k: first[k] for k in dm.METRICS}


def test_collapsed_latents_are_left_out_of_the_factorvae_vote(factors):
    codes = np.concatenate([noisy(factors), 1e-3 * np.random.default_rng(6).normal(size=(N, 2))], 1)
    found = dm.factorvae_score(codes, factors)
    assert found["factorvae_active"] == [0, 1, 2, 3] and found["factorvae_score"] >= 0.99


@pytest.mark.parametrize("codes, factors, message", [
    (np.zeros((20, 2)), np.zeros((19, 2), int), "same N"),
    (np.full((20, 2), np.nan), np.zeros((20, 2), int), "NaN"),
    (np.zeros((20, 2)), np.full((20, 2), 0.5), "discrete"),
    (np.zeros((20, 2)), np.zeros((20, 2), int), "single value"),
    (np.zeros((5, 2)), np.arange(10).reshape(5, 2), "at least 10"),
])
def test_bad_inputs_are_refused_with_the_reason(codes, factors, message):
    with pytest.raises(ValueError, match=message):
        dm.disentanglement(codes, factors)


def test_unknown_options_are_refused(factors):
    with pytest.raises(ValueError, match="importance"):
        dm.dci(noisy(factors), factors, importance="forest")
    with pytest.raises(ValueError, match="estimator"):
        dm.infomec(noisy(factors), factors, estimator="kde")


# -- the sprites generator ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds() -> datasets.Dataset:
    return datasets.load("sprites")


def test_sprites_shapes_ranges_and_kinds(ds):
    grid = sprites.DEFAULT
    assert ds.train.shape == (grid.size - grid.num_test, 32 * 32) and ds.test.shape == (grid.num_test, 32 * 32)
    assert ds.image_shape == (32, 32) and ds.kinds == {"factors": "factor"} and ds.factor_names == sprites.FACTORS
    assert set(ds.train.unique().tolist()) == {0.0, 1.0} and ds.transform is None  # binary already
    for f in (ds.train_covariates["factors"], ds.test_covariates["factors"]):
        assert f.dtype == torch.int64 and f.shape[1] == 5
        assert (f.min(0).values == 0).all() and (f.max(0).values == torch.tensor(grid.sizes) - 1).all()
    assert sprites.DSPRITES.sizes == (3, 6, 40, 32, 32) and sprites.DSPRITES.size == 737280


def test_sprites_split_is_seeded_and_covers_the_grid_once(ds):
    again = datasets.load("sprites")
    assert torch.equal(again.train, ds.train) and torch.equal(again.test_covariates["factors"],
                                                              ds.test_covariates["factors"])
    train, test = (sprites.index_of(d["factors"]) for d in (ds.train_covariates, ds.test_covariates))
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(sprites.DEFAULT.size))
    other = sprites.load_sprites(seed=1)
    assert not torch.equal(other.test_covariates["factors"], ds.test_covariates["factors"])
    small = datasets.load("sprites", train_size=10, test_size=5)
    assert torch.equal(small.test, ds.test[:5]) and torch.equal(small.train_covariates["factors"],
                                                                ds.train_covariates["factors"][:10])


def test_every_factor_changes_the_image():
    base = torch.tensor([2, 3, 1, 4, 4])  # a heart: no symmetry, so every orientation step shows
    for j, n in enumerate(sprites.DEFAULT.sizes):
        images = sprites.render(base.repeat(n, 1).index_put_((torch.arange(n), torch.tensor(j)), torch.arange(n)))
        assert len({tuple(im.tolist()) for im in images}) == n, sprites.FACTORS[j]


def test_the_window_holds_every_sprite_and_the_area_matches_the_formula():
    grid = sprites.DEFAULT
    f = sprites.factor_grid(grid)
    images = sprites.render(f, grid)
    assert torch.equal(images, sprites.render(f, grid, window=False))
    sample = sprites.split(sprites.DSPRITES)[1][:500]  # and at the published sizes
    assert torch.equal(sprites.render(sample, sprites.DSPRITES), sprites.render(sample, sprites.DSPRITES, window=False))
    scale = grid.values(f)["scale"]
    area = (2 * scale * sprites.HALF_SIDE) ** 2 * grid.image_size ** 2  # the square's area in pixels
    squares = f[:, 0] == 0
    for s in range(grid.num_scales):  # averaged over 640 placements the pixel-centre test is unbiased for the area
        pick = squares & (f[:, 1] == s)
        assert images[pick].sum(1).mean() == pytest.approx(area[pick][0].item(), rel=0.03)


def test_the_centroid_moves_with_the_position_factors(ds):
    images = ds.test.reshape(-1, 32, 32)
    f = ds.test_covariates["factors"]
    mass = images.sum((1, 2))
    cols = (images.sum(1) * torch.arange(32)).sum(1) / mass
    rows = (images.sum(2) * torch.arange(32)).sum(1) / mass
    expected = (sprites.MARGIN + (1 - 2 * sprites.MARGIN) * f[:, 3:].double() / 7) * 32 - 0.5
    symmetric = f[:, 0] < 2  # square and ellipse: the centroid is the centre, up to the pixel grid
    assert (cols[symmetric] - expected[symmetric, 0]).abs().max() < 1.0
    assert (rows[symmetric] - expected[symmetric, 1]).abs().max() < 1.0
    for factor, centroid in ((3, cols), (4, rows)):
        means = torch.stack([centroid[f[:, factor] == v].mean() for v in range(8)])
        assert (means.diff() > 0).all()  # x to the right, y down
    by_scale = torch.stack([mass[f[:, 1] == v].mean() for v in range(6)])
    assert (by_scale.diff() > 0).all()


def test_bad_factors_and_grids_are_refused():
    with pytest.raises(ValueError, match="orientation must lie in 0..9"):
        sprites.render(torch.tensor([[0, 0, 10, 0, 0]]))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        sprites.render(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="num_test"):
        sprites.Grid(num_positions=2, num_scales=1, num_orientations=1, num_test=12)


def test_a_user_file_with_factors_gets_the_factor_kind(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.default_rng(0).random((30, 4)), factors=np.arange(60).reshape(30, 2) % 3)
    loaded = datasets.load(str(path), "none")
    assert loaded.kinds == {"factors": "factor"} and loaded.train_covariates["factors"].dtype == torch.int64
    np.savez(path, x=np.zeros((30, 4)), factors=np.full((30, 2), -1))
    with pytest.raises(ValueError, match="non-negative integer"):
        datasets.load(str(path), "none")


# -- in a run's evaluation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model, kind", [("vae", "importance"), ("wae", "reconstruction")])
def test_a_sprites_run_reports_the_metrics(tmp_path, model, kind):
    out = runs.fit(model, data="sprites", out=tmp_path / "run", train_size=64, test_size=40, epochs=1, batch_size=32,
                   num_particles=5, progress=False, settings={"model.z_dim": "3", "model.hidden_dims": "8"})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == kind and metrics["disentanglement_num_test"] == 40
    for key in dm.METRICS:
        assert isinstance(metrics[key], float) and -1e-9 <= metrics[key] <= 1 + 1e-9, key
    details = json.loads((out / "diagnostics.json").read_text())["disentanglement"]
    assert details["factors"] == list(sprites.FACTORS) and details["sites"] == ["z"]
    assert np.array(details["dci_importance"]).shape == (3, 5)
