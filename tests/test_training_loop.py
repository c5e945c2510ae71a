"""The training loop's options: optimisers, learning-rate schedules and gradient clipping, exact on resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aezoo.inference import ENGINES
from aezoo.inference.optim import SCHEDULES
from aezoo.models import MODELS
from aezoo.progress import current_epoch


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


SCRIPT = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0, 1.0]  # validation losses by epoch: best at epoch 3 until epoch 7


class Scripted(type(ENGINES["svi"]())):
    """svi whose validation loss (no gradient, the 8 held-out rows) follows SCRIPT by epoch."""

    def loss(self, ae, *batch, num_data):
        if not torch.is_grad_enabled() and num_data == 8 and len(batch[0]) == 8:
            return torch.tensor(SCRIPT[int(current_epoch()) - 1], dtype=torch.float64)
        return super().loss(ae, *batch, num_data=num_data)


def test_early_stopping_stops_at_the_known_best_epoch_and_keeps_it(tmp_path):
    ae, x = small()
    ckpt = tmp_path / "ckpt.pt"
    fit = Scripted(epochs=8, batch_size=10, patience=3, progress=False).fit(ae, x[8:], checkpoint=ckpt,
                                                                           validation=(x[:8],))
    # epochs 4, 5, 6 do not beat epoch 3's 3.0: the fit stops after epoch 6 and epoch 3 is the best
    assert len(fit.losses) == 6 and fit.stats["val_losses"].tolist() == SCRIPT[:6]
    assert fit.stats["best_epoch"].item() == 3
    best = torch.load(ckpt.with_name("ckpt.best.pt"), weights_only=True)
    assert best["epoch"] == 3
    again = Scripted(epochs=8, batch_size=10, patience=3, progress=False).fit(ae, x[8:], checkpoint=ckpt,
                                                                             validation=(x[:8],))
    assert torch.equal(again.losses, fit.losses)  # a stopped fit stays stopped when rerun
    whole = Scripted(epochs=8, batch_size=10, progress=False).fit(small()[0], x[8:], validation=(x[:8],))
    assert len(whole.losses) == 8 and whole.stats["best_epoch"].item() == 8  # no patience: every epoch


def test_validation_changes_no_training_result():
    a, x = small()
    plain = ENGINES["svi"](epochs=3, batch_size=10, progress=False).fit(a, x[8:])
    b, _ = small()
    watched = ENGINES["svi"](epochs=3, batch_size=10, progress=False).fit(b, x[8:], validation=(x[:8],))
    assert torch.equal(plain.losses, watched.losses)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert (watched.stats["val_losses"] > 0).all()


def test_val_size_from_the_command_line(tmp_path, capsys):
    import csv

    from aezoo import cli

    out = tmp_path / "run"
    argv = ["fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8", "--epochs",
            "3", "--train-size", "200", "--test-size", "20", "--num-particles", "10", "--val-size", "50",
            "--set", "engine.patience=2", "--eval", "none", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["val_loss_nats_per_datum"]) > 0 for r in rows)
    assert (out / "checkpoint.best.pt").exists()
    assert json.loads((out / "config.json").read_text())["data"]["val_size"] == 50
    refused = [str(tmp_path / "b") if a == str(out) else "200" if a == "50" else a for a in argv]
    assert cli.main(refused) == 2 and not (tmp_path / "b").exists()
    assert "--val-size must be between 1 and 199" in capsys.readouterr().err


def test_tensorboard_event_files_hold_the_scalars_and_hyper_parameters(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aezoo import cli

    out = tmp_path / "run"
    assert cli.main(["fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8",
                     "--epochs", "3", "--train-size", "100", "--test-size", "20", "--num-particles", "10",
                     "--val-size", "20", "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    train = events.Scalars("train/loss_nats_per_datum")
    assert [e.step for e in train] == [1, 2, 3] and [e.step for e in events.Scalars("validation/loss_nats_per_datum")]
    with open(out / "losses.csv") as f:
        recorded = [float(line.split(",")[1]) for line in f.readlines()[1:]]
    assert [e.value for e in train] == pytest.approx(recorded, abs=1e-5)
    assert "samples" in events.Tags()["images"]
    hparams = EventAccumulator(str(out / "tensorboard" / "."))  # add_hparams writes into the same folder
    hparams.Reload()
    assert any(t.startswith("metrics/test_log_likelihood") for t in hparams.Tags()["scalars"])


def test_an_mlflow_file_store_receives_the_metrics(tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from aezoo import cli

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores for tests like this one
    store = f"file:{tmp_path / 'mlruns'}"
    out = tmp_path / "run"
    assert cli.main(["fit", "vae", "--data", "digits", "--set", "model.z_dim=2", "--set", "model.hidden_dims=8",
                     "--epochs", "2", "--train-size", "100", "--test-size", "20", "--num-particles", "10",
                     "--mlflow", store, "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    client = mlflow.tracking.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("aezoo").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    with open(out / "losses.csv") as f:
        recorded = [float(line.split(",")[1]) for line in f.readlines()[1:]]
    assert [m.step for m in history] == [1, 2] and [m.value for m in history] == pytest.approx(recorded, abs=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["test_log_likelihood"] == pytest.approx(metrics["test_log_likelihood"])
    assert run.data.params["engine.config.epochs"] == "2"
