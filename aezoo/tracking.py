"""Experiment tracking of a run with the ecosystem's tools: TensorBoard event files in every run folder
(``torch.utils.tensorboard``) and, on request, an MLflow tracking URI."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any


def import_mlflow():
    """The ``mlflow`` module; ``ValueError`` with the install command when it is missing."""
    try:
        import mlflow
    except ImportError as err:
        raise ValueError("--mlflow needs MLflow: pip install 'aezoo[mlflow]' (or mlflow)") from err
    return mlflow


def log_mlflow(uri: str, run_dir: Path, config: dict[str, Any], result, metrics: dict[str, Any] | None) -> str:
    """Log a run to the MLflow tracking server or store at ``uri`` (experiment ``aezoo``, run name the folder's):
    the flattened settings as parameters, ``train/loss`` (and ``validation/loss``, ``train/lr``) per epoch, the
    numeric headline metrics and ``report.html`` as an artifact. Returns the MLflow run id."""
    mlflow = import_mlflow()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("aezoo")
    with mlflow.start_run(run_name=run_dir.name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flat_config(config).items()})
        series = {"train/loss": result.losses, "validation/loss": result.stats.get("val_losses"),
                  "train/lr": result.stats.get("lr")}
        for name, values in series.items():
            for epoch, value in enumerate([] if values is None else values.tolist(), start=1):
                mlflow.log_metric(name, value, step=epoch)
        numbers = {k.replace(".", "_"): float(v) for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
        mlflow.log_metrics(numbers)
        report = Path((metrics or {}).get("eval_dir", run_dir)) / "report.html"
        if report.exists():
            mlflow.log_artifact(str(report))
        return run.info.run_id


def flat_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"engine.config.lr": ...}`` (for comparisons, TensorBoard and MLflow)."""
    items: dict[str, Any] = {}
    for k, v in cfg.items():
        items.update(flat_config(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return items


TENSORBOARD_DIR = "tensorboard"


@contextlib.contextmanager
def tensorboard(run_dir: Path):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``run_dir/tensorboard`` (``tensorboard --logdir runs``)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
    try:
        yield writer
    finally:
        writer.close()


def scalars(tb, epoch: int, values: dict[str, float]) -> None:
    names = {"loss": "train/loss_nats_per_datum", "val_loss": "validation/loss_nats_per_datum", "lr": "train/lr"}
    for key, value in values.items():
        tb.add_scalar(names[key], value, epoch)


def hparams(tb, config: dict[str, Any], metrics: dict[str, Any], eval_dir: Path) -> None:
    """The run's settings and headline numbers as TensorBoard hyper-parameters, and its figures as images."""
    import matplotlib.image

    settings = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat_config(config).items()}
    numbers = {f"metrics/{k}": float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
    tb.add_hparams(settings, numbers, run_name=".")
    for figure in ("loss.png", "samples.png", "reconstructions.png"):
        if (eval_dir / figure).exists():
            tb.add_image(figure.removesuffix(".png"), matplotlib.image.imread(eval_dir / figure)[..., :3],
                         dataformats="HWC")
