"""Semi-supervised M2: the labelled and unlabelled objectives of Kingma et al., partial labels, --labels."""

from __future__ import annotations

import json

import pyro
import pytest
import torch

from aezoo import cli, data
from aezoo.inference import ENGINES
from aezoo.models import m2
from aezoo.runs import keep_labels

CFG = m2.Config(x_dim=12, z_dim=2, hidden_dims=(8,), num_classes=3)


def elbo_estimates(ae, x, y, repeats: int = 6, particles: int = 300) -> torch.Tensor:
    """``repeats`` independent estimates of the per-datum ELBO (enumerated over y where unlabelled)."""
    svi = ENGINES["svi"](elbo="traceenum", num_particles=particles, progress=False)
    with torch.no_grad():
        return torch.stack([-svi.loss(ae, x, y, num_data=len(x)) for _ in range(repeats)])


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Means within 4 combined standard errors of the repeated estimates (failure rate about 6e-5)."""
    se = (a.var() / len(a) + b.var() / len(b)).sqrt()
    return bool((a.mean() - b.mean()).abs() < 4 * se + 1e-6)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    ae = m2.build(CFG)
    x, _ = m2.example_data(CFG, 8, seed=1)
    return ae, x


def test_unlabelled_elbo_is_the_classifier_weighted_labelled_elbo_plus_entropy(pair):
    # U(x) = sum_y q(y | x) L(x, y) + H(q(y | x))  (Kingma et al., eq. 8), per datum
    ae, x = pair
    with torch.no_grad():
        q = ae.guide.label_logits(x).softmax(-1)
    labelled = torch.stack([torch.stack([elbo_estimates(ae, x[i:i + 1], torch.tensor([k]))
                                         for k in range(3)]) for i in range(len(x))])  # (N, K, repeats)
    entropy = -(q * q.log()).sum(-1)
    expected = (q.unsqueeze(-1) * labelled).sum(1) + entropy.unsqueeze(-1)  # (N, repeats)
    got = torch.stack([elbo_estimates(ae, x[i:i + 1], None) for i in range(len(x))])
    assert all(close(got[i], expected[i]) for i in range(len(x)))


def test_a_mixed_minibatch_is_the_sum_of_its_labelled_and_unlabelled_parts(pair):
    ae, x = pair
    y = torch.tensor([0, 2, -1, 1, -1, -1, 2, 0])
    known = y >= 0
    mixed = elbo_estimates(ae, x, y)
    parts = (known.sum() * elbo_estimates(ae, x[known], y[known]) + (~known).sum() * elbo_estimates(
        ae, x[~known], None)) / len(x)
    assert close(mixed, parts)


def test_classification_term_counts_the_labelled_data_only(pair):
    ae, x = pair
    y = torch.tensor([0, 2, -1, 1, -1, -1, 2, 0])
    term = ENGINES["svi"](elbo="traceenum", penalty="classification", progress=False).penalty_term()
    logits = ae.guide.label_logits(x)
    known = y >= 0
    expected = torch.nn.functional.cross_entropy(logits[known], y[known], reduction="sum") / len(x)
    torch.testing.assert_close(term(ae, (x, y), len(x), None, None), expected)
    assert term(ae, (x, None), len(x), None, None).item() == 0.0


def test_keep_labels_is_balanced_and_seeded():
    ds = data.load("digits", "none")
    y = keep_labels(ds, 50)
    known = y >= 0
    assert known.sum() == 50 and torch.equal(torch.bincount(y[known], minlength=10), torch.full((10,), 5))
    assert torch.equal(y[known], ds.train_labels[known]) and torch.equal(y, keep_labels(ds, 50))
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        keep_labels(ds, 15)


def test_semi_supervised_fit_from_the_cli_learns_to_classify(tmp_path, capsys):
    out = tmp_path / "m2"
    argv = ["fit", "m2", "--data", "digits", "--binarize", "static", "--labels", "100", "--epochs", "30",
            "--set", "model.z_dim=8", "--set", "model.hidden_dims=64", "--set", "engine.penalty_weight=15",
            "--lr", "3e-3", "--batch-size", "50", "--num-particles", "20", "--out", str(out), "--no-progress"]
    with pyro.settings.context(module_local_params=True):
        assert cli.main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["labels"] == 100 and config["engine"]["config"]["elbo"] == "traceenum"
    # 300 test digits: chance is 0.10; 100 labels and 30 epochs reach far more (measured: 0.74)
    assert metrics["test_accuracy"] > 0.5


def test_labelled_per_batch_puts_labels_in_every_minibatch_and_keeps_the_objective():
    torch.manual_seed(0)
    ae = m2.build(CFG)
    x, _ = m2.example_data(CFG, 200, seed=1)
    y = torch.where(torch.arange(200) < 20, torch.arange(200) % 3, m2.UNLABELLED)  # 20 labelled
    seen = []

    class Spy(type(ENGINES["svi"]())):
        def loss(self, ae, *batch, num_data):
            seen.append((len(batch[0]), int((batch[1] >= 0).sum()), num_data))
            return super().loss(ae, *batch, num_data=num_data)

    spy = Spy(epochs=2, batch_size=50, labelled_per_batch=5, elbo="traceenum", penalty="classification",
              progress=False)
    fit = spy.fit(ae, x, y)
    steps = [s for s in seen if s[2] != 200]  # not the warm-up and divergence checks on the first 50 rows
    # each step: 5 labelled data scored as a stratum of 20, then 45 unlabelled as one of 180; 4 steps an epoch
    assert steps == [(5, 5, 20), (45, 0, 180)] * 8 and len(fit.losses) == 2
    # the stratified loss weights the strata by their sizes: on whole strata it is the plain loss exactly
    strata = spy._strata(ae, (x, y))
    mean = type("Mean", (type(ENGINES["svi"]()),), {"loss": lambda self, ae, x, y, num_data: x.sum(-1).mean()})()
    torch.testing.assert_close(mean._batch_loss(ae, (x, y), strata, None, 200, strata), x.sum(-1).mean())
    for bad, match in ((50, "between 0 and batch_size - 1"), (-1, "labelled_per_batch must be an integer >= 0")):
        with pytest.raises(ValueError, match=match):
            type(spy)(batch_size=50, labelled_per_batch=bad, progress=False).fit(ae, x, y)
    vae_like = m2.build(CFG)
    object.__setattr__(vae_like, "covariates", ())
    with pytest.raises(ValueError, match="needs a model with a label covariate"):
        ENGINES["svi"](labelled_per_batch=5, progress=False)._strata(vae_like, (x,))
