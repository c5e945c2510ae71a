"""The training loop's options: optimisers, learning-rate schedules and gradient clipping, exact on resume."""

from __future__ import annotations

import math

import pytest
import torch

from aezoo.inference import ENGINES
from aezoo.inference.objectives import current_epoch
from aezoo.inference.optim import SCHEDULES
from aezoo.models import MODELS


def small():
    cfg = MODELS["vae"].Config(x_dim=6, z_dim=2, hidden_dims=(4,))
    torch.manual_seed(0)
    return MODELS["vae"].build(cfg), torch.bernoulli(torch.rand(40, 6, generator=torch.Generator().manual_seed(1)))


def burda(e: int) -> float:
    """Burda et al.'s schedule written out: stage i lasts 3^i epochs at 10^(-i/7)."""
    ends = [sum(3**j for j in range(i + 1)) for i in range(10)]
    return 10 ** (-next(i for i, end in enumerate(ends) if e < end) / 7)


EXPECTED = {
    "constant": lambda e, E: 1.0,
    "exponential": lambda e, E: 0.5**e,
    "cosine": lambda e, E: 0.5 * (1 + math.cos(math.pi * e / E)),
    "burda": lambda e, E: burda(e),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedules_set_the_documented_rate_and_resume_bit_exactly(schedule, tmp_path):
    engine = dict(epochs=6, batch_size=10, lr=1e-2, lr_schedule=schedule, lr_decay=0.5, progress=False)
    ae, x = small()
    whole = ENGINES["svi"](**engine).fit(ae, x)
    expected = [1e-2 * EXPECTED[schedule](e, 6) for e in range(6)]
    torch.testing.assert_close(whole.stats["lr"], torch.tensor(expected, dtype=torch.float64))
    assert [burda(e) for e in (0, 1, 3, 4, 12, 13)] == [1, *[10 ** (-1 / 7)] * 2, *[10 ** (-2 / 7)] * 2, 10 ** (-3 / 7)]

    class Interrupted(type(ENGINES["svi"]())):  # Ctrl-C in the middle of epoch 4
        def loss(self, ae, *batch, num_data):
            if (current_epoch() or 0) >= 3.5:
                raise KeyboardInterrupt
            return super().loss(ae, *batch, num_data=num_data)

    again, _ = small()
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        Interrupted(**engine).fit(again, x, checkpoint=ckpt)
    resumed = ENGINES["svi"](**engine).fit(again, x, checkpoint=ckpt)
    assert torch.equal(resumed.losses, whole.losses)
    assert all(torch.equal(a, b) for a, b in zip(ae.state_dict().values(), again.state_dict().values()))
    torch.testing.assert_close(resumed.stats["lr"], whole.stats["lr"])


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_every_optimizer_trains(optimizer):
    ae, x = small()
    fit = ENGINES["svi"](epochs=30, batch_size=10, lr=1e-2, optimizer=optimizer, weight_decay=1e-4,
                         progress=False).fit(ae, x)
    # 6 binary pixels of probability ~U(0, 1) each: training lowers the loss well below its start (~4.2 nats)
    assert fit.losses[-5:].mean() < fit.losses[0] - 0.3, fit.losses


def test_clipping_bounds_every_step():
    ae, x = small()
    steps = []

    class Spy(type(ENGINES["svi"]())):
        def loss(self, ae, *batch, num_data):
            value = super().loss(ae, *batch, num_data=num_data)
            if torch.is_grad_enabled():
                value.register_hook(lambda g: steps.append(1))  # one per backward pass
            return value

    before = [p.detach().clone() for p in ae.parameters()]
    Spy(epochs=1, batch_size=40, lr=1.0, optimizer="sgd", clip_norm=1e-3, progress=False).fit(ae, x)
    # one SGD step of lr 1 on gradients clipped to norm 1e-3 (momentum starts at 0): the parameters move by 1e-3
    moved = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(ae.parameters(), before)]).norm()
    assert len(steps) == 1 and moved == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize("fields, message", [
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"lr_schedule": "step"}, "unknown lr_schedule 'step'"),
    ({"lr_decay": 0.0}, r"lr_decay must lie in \(0, 1\]"),
    ({"lr_decay": 1.5}, r"lr_decay must lie in \(0, 1\]"),
    ({"clip_norm": -1.0}, "clip_norm must be a finite number >= 0"),
    ({"weight_decay": -1e-4}, "weight_decay must be a finite number >= 0"),
])
def test_bad_loop_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ENGINES["iwae"](**fields)
