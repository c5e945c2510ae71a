"""Deep Markov Model: the chain densities by hand, padding invariance, training, the chorales loader."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from aezoo import data
from aezoo.inference import ENGINES
from aezoo.models import dmm
from aezoo.sequence import time_valid

CFG = dmm.Config(x_dim=6, z_dim=3, emission_dim=8, transition_dim=8, rnn_dim=8, seq_len=7)


def by_hand(step, z0, context, z, valid):
    """sum_t valid_t log N(z_t; step(z_{t-1}, c_t)), one step at a time: (B,)."""
    total, prev = z.new_zeros(z.shape[0]), z0.expand(z.shape[0], -1)
    for t in range(z.shape[1]):
        loc, scale = step(prev, context[:, t])
        total = total + torch.where(valid[:, t], dist.Normal(loc, scale).log_prob(z[:, t]).sum(-1), 0.0)
        prev = z[:, t]
    return total


def test_chain_log_probs_equal_per_step_normals():
    ae = dmm.build(CFG)
    x, mask = dmm.example_data(CFG, 5, seed=1)
    valid = time_valid(x, mask)
    assert not valid.all() and valid[:, 0].all()  # example data have padding
    q, p = ae.guide.posterior(x, mask), ae.model.z_prior(x, mask)
    z = q.rsample()
    assert z.shape == (5, CFG.seq_len, CFG.z_dim) and q.batch_shape == p.batch_shape == (5,)
    torch.testing.assert_close(q.log_prob(z), by_hand(ae.guide.combiner, ae.guide.z0, q.context, z, valid))
    torch.testing.assert_close(p.log_prob(z), by_hand(ae.model.transition, ae.model.z0, p.context, z, valid))
    # particles left of the batch (as IWAE and the diagnostics use): same values per particle
    zk = q.expand((4, 5)).rsample()
    torch.testing.assert_close(q.log_prob(zk)[2], q.log_prob(zk[2]))
    torch.testing.assert_close(p.expand((4, 5)).log_prob(zk)[1], p.log_prob(zk[1]))


def test_rsample_follows_the_chain():
    # With unit noise replaced by zero the draw is the chain of means: check the step recursion.
    ae = dmm.build(CFG)
    x, mask = dmm.example_data(CFG, 3, seed=2)
    q = ae.guide.posterior(x, mask)
    z = q.rsample()
    loc, scale = ae.guide.combiner(torch.cat([ae.guide.z0.expand(3, 1, -1), z[:, :-1]], 1), q.context)
    eps = (z - loc) / scale
    assert eps.abs().max() < 6 and 0.5 < eps.std() < 1.5
    assert z.requires_grad  # reparameterised


def elbo(ae, x, mask, seed=3, num_particles=4):
    pyro.set_rng_seed(seed)
    loss = pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    return loss.differentiable_loss(ae.model, ae.guide, x, mask)


def test_padding_and_masked_steps_leave_the_loss_unchanged():
    ae = dmm.build(CFG)
    x, mask = dmm.example_data(CFG, 4, seed=3)
    assert not mask.all()  # some sequences are shorter than T: padded already
    pad_x = torch.cat([x, torch.rand(4, 3, CFG.x_dim).round()], 1)  # junk in 3 extra steps
    pad_mask = torch.cat([mask, torch.zeros(4, 3, CFG.x_dim, dtype=torch.bool)], 1)
    torch.testing.assert_close(elbo(ae, pad_x, pad_mask), elbo(ae, x, mask))
    # junk values under the mask inside the sequences change nothing either
    junk_x = x.where(mask, 1 - x)
    torch.testing.assert_close(elbo(ae, junk_x, mask), elbo(ae, x, mask))
    # without a mask every step counts: the loss differs
    assert not torch.allclose(elbo(ae, pad_x, None), elbo(ae, x, mask))


def test_missing_frames_inside_a_sequence_keep_the_chain():
    # a frame with no observed entry before the end stays scored in p(z) and q(z)
    x, mask = dmm.example_data(CFG, 2, seed=4)
    mask = torch.ones_like(mask)
    mask[:, 2] = False
    assert time_valid(x, mask).all()


def test_model_trace_sites():
    ae = dmm.build(CFG)
    x, mask = dmm.example_data(CFG, 5, seed=5)
    guide_tr = poutine.trace(ae.guide).get_trace(x, mask)
    model_tr = poutine.trace(poutine.replay(ae.model, trace=guide_tr)).get_trace(x, mask)
    assert model_tr.nodes["z"]["value"].shape == (5, CFG.seq_len, CFG.z_dim)
    assert model_tr.nodes["x"]["fn"].event_shape == (CFG.seq_len, CFG.x_dim)
    model_tr.compute_log_prob()
    assert model_tr.nodes["x"]["log_prob"].shape == (5,)


def test_svi_decreases_the_loss():
    cfg = dmm.Config(x_dim=6, z_dim=2, emission_dim=16, transition_dim=16, rnn_dim=16, seq_len=8)
    x, mask = dmm.example_data(cfg, 64, seed=6)
    torch.manual_seed(0)
    ae = dmm.build(cfg)
    result = ENGINES["svi"](epochs=12, batch_size=16, lr=1e-2, progress=False).fit(ae, x, mask)
    losses = result.losses
    assert torch.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:2].mean() - 2.0, losses  # about 30 nats per sequence at the start


def test_iwae_applies_and_importance_estimate_bounds_the_elbo():
    from aezoo.diagnostics import importance_estimate

    ae = dmm.build(CFG)
    x, mask = dmm.example_data(CFG, 6, seed=7)
    ENGINES["iwae"](epochs=1, batch_size=6, lr=1e-3, progress=False, num_particles=3).fit(ae, x, mask)
    est = importance_estimate(ae, x, mask, num_particles=200)
    assert est.log_likelihood.shape == (6,)
    assert (est.log_likelihood >= est.elbo).all()


# -- chorales ------------------------------------------------------------------------------------


def test_chorales_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("AEZOO_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    fake = [rng.random((n, 88)) < 0.05 for n in (4, 9, 6, 5, 3, 7)]
    calls = []

    def parse(step, transpose):
        calls.append((step, transpose))
        return fake, np.arange(6)

    monkeypatch.setattr(data.sequences, "_parse_chorales", parse)
    rolls, shifts = data.chorale_rolls()
    again, shifts_again = data.chorale_rolls()
    assert calls == [(1.0, True)] and list(tmp_path.glob("chorales_*.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(again, fake)) and len(again) == 6
    assert np.array_equal(shifts_again, np.arange(6))
    train, test = data.chorales("train"), data.chorales("test")
    assert train.x.shape == (5, 9, 88) and test.x.shape == (1, 9, 88)  # index 4 is the one test chorale
    assert torch.equal(test.x[0, :3], torch.as_tensor(fake[4], dtype=torch.float32))
    assert test.mask[0, :3].all() and not test.mask[0, 3:].any() and not test.x[0, 3:].any()
    ds = data.load("chorales", train_size=3)
    assert ds.train.shape == (3, 9, 88) and ds.train_covariates["mask"].shape == (3, 9, 88)


def test_piano_roll_from_a_score():
    music21 = pytest.importorskip("music21")
    s = music21.stream.Stream()
    s.append(music21.note.Note("C4", quarterLength=2))  # MIDI 60: steps 0, 1
    s.append(music21.note.Note("D4", quarterLength=0.5))  # step 2
    s.append(music21.note.Note("E4", quarterLength=0.5))  # between samples: dropped
    s.append(music21.chord.Chord(["G4", "B4"], quarterLength=1))  # step 3
    roll = data.piano_roll(s, step=1.0, shift=-2)
    assert roll.shape == (4, 88)
    on = {(t, k + 21) for t, k in zip(*np.nonzero(roll))}
    assert on == {(0, 58), (1, 58), (2, 60), (3, 65), (3, 69)}
