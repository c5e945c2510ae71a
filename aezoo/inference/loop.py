"""The one optimisation loop shared by the gradient engines (``svi``, ``iwae``, ...).

An engine subclasses :class:`GradientEngine` and states only its objective in ``loss``; the
loop does the optimiser, learning-rate schedule and gradient clipping (:mod:`aezoo.inference.optim`),
minibatching with ``num_data`` scaling (optionally stratified into labelled and unlabelled
data, ``labelled_per_batch``), Adam, seeding, a tqdm progress bar, NaN checks and per-epoch
checkpoints from which an interrupted fit resumes.

A term with parameters of its own (an adversarial critic, :mod:`aezoo.inference.terms.critic`) is
trained in alternation: the engine lists it in :meth:`GradientEngine.stepped_terms`, and such a term
has ``own_parameters(ae)`` (parameters of ``ae`` that the main optimiser leaves out),
``optimizer(params)`` (its own optimiser, checkpointed with the run) and
``step(ae, batch, optimizer) -> float`` (one step of its parameters alone on the minibatch, its loss),
which the loop calls before every step of the autoencoder. The learning-rate schedule and
``clip_norm`` apply to the main optimiser only.

Devices: the loop runs where ``ae``'s parameters are; data on the CPU are copied there once, from pinned
memory without blocking. On CUDA no value is read back per step (:mod:`aezoo.inference.stepping`: the
checks are flags on the device, read when the bar refreshes and at the end of every epoch). ``amp`` runs
the networks in mixed precision (:mod:`aezoo.inference.amp`). Inside a ``torchrun`` process group the
loop trains data-parallel with ``DistributedDataParallel`` (:mod:`aezoo.inference.distributed`):
``batch_size`` is per process, only rank 0 writes checkpoints, and a fit resumes under another world size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyro
import torch
from torch import Tensor
from tqdm.auto import tqdm

from aezoo.checks import integer, positive
from aezoo.core import Autoencoder, FitResult, atomic_torch_save, check_lengths, load_checkpoint, rows, to_device
from aezoo.inference import distributed
from aezoo.inference.amp import networks_autocast
from aezoo.inference.amp import scaler as make_scaler
from aezoo.inference.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from aezoo.inference.stepping import Stepper, fused
from aezoo.inference.validation import Validation
from aezoo.progress import at_epoch


class Diverged(FloatingPointError):
    """A fit stopped because its loss or gradient diverged (NaN, infinite, or past the divergence bound)."""


@dataclass(frozen=True)
class GradientEngine:
    """Fields shared by optimisation engines.

    Attributes:
        epochs: passes over the training data.
        batch_size: minibatch size ``B``.
        lr: learning rate (the schedule's factor multiplies it each epoch).
        seed: seeds Pyro/torch and the minibatch order.
        progress: show a tqdm progress bar with the running loss.
        labelled_per_batch: for semi-supervised data (a covariate of kind ``"label"`` given for some
            data, -1 for the others), every minibatch holds this many labelled data (a seeded
            cycle through them) and ``batch_size - labelled_per_batch`` unlabelled ones; an epoch is
            one pass over the unlabelled data. Each part is scored as a minibatch of its own stratum
            (``num_data`` its size) and the two are weighted by the strata's sizes, so the objective
            is unchanged and only the variance of its labelled terms falls (with 100 labels among
            60,000 images a plain minibatch of 100 holds one label in six steps). 0: plain minibatches,
            as also when the data hold only one kind.
        divergence_factor: the fit stops with :class:`Diverged` when a step's loss exceeds the loss at the
            start of the fit ``l0`` by more than ``divergence_factor * (|l0| + 1)`` nats per datum (an
            objective that grows a hundredfold is diverging, not learning); 0 turns the check off. A NaN or
            infinite loss or gradient always stops the fit, before the step is applied.
        optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9), from ``torch.optim``.
        weight_decay: the optimiser's weight decay (>= 0).
        lr_schedule: ``constant``, ``exponential`` (``lr_decay ** epoch``), ``cosine`` or ``burda`` (Burda et
            al.'s stepwise 10^(-i/7) over stages of 3^i epochs); :data:`aezoo.inference.optim.SCHEDULES`.
        lr_decay: the exponential schedule's factor per epoch, in (0, 1].
        clip_norm: clip the global gradient norm to this before each step (> 0); 0: no clipping.
        patience: with ``validation`` data, stop once this many epochs in a row have not improved the
            validation loss (:mod:`aezoo.inference.validation`); 0: train every epoch.
        amp: mixed precision: the networks' layers compute in bfloat16 (float16 with loss scaling on GPUs
            without bfloat16) while likelihoods, KL terms and the objective stay in full precision
            (:mod:`aezoo.inference.amp`).
    """

    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    progress: bool = True
    labelled_per_batch: int = 0
    divergence_factor: float = 100.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_decay: float = 0.95
    clip_norm: float = 0.0
    patience: int = 0
    amp: bool = False

    def __post_init__(self) -> None:
        integer("patience", self.patience, minimum=0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {tuple(SCHEDULES)}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")
        positive("weight_decay", self.weight_decay, allow_zero=True)
        positive("clip_norm", self.clip_norm, allow_zero=True)
        positive("divergence_factor", self.divergence_factor, allow_zero=True)
        integer("epochs", self.epochs)
        integer("batch_size", self.batch_size)
        positive("lr", self.lr)
        integer("seed", self.seed, minimum=0)
        integer("labelled_per_batch", self.labelled_per_batch, minimum=0)

    def loss(self, ae: Autoencoder, *batch: Tensor, num_data: int) -> Tensor:
        """Negative objective per datum (nats), averaged over the minibatch; differentiable."""
        raise NotImplementedError

    def stepped_terms(self) -> tuple:
        """The objective's terms with parameters and an optimiser step of their own (module docstring); none here."""
        return ()

    def compile(self, ae: Autoencoder, batch: tuple, num_data: int) -> str:
        """The path that computes the fit's steps, chosen once on the first minibatch ``batch`` after the warm-up:
        ``"pyro"`` (Pyro's traces, the reference; the default) or ``"compiled"`` (:mod:`aezoo.inference.compiled`,
        taken only when it gives the same loss and gradients there). ``FitResult.stats["compiled"]`` records it."""
        return "pyro"

    def check(self, ae: Autoencoder, *data: Tensor) -> None:
        """Raise ``ValueError`` when the engine does not apply to ``ae`` (e.g. needs reparameterised guides)."""

    def fit(
        self,
        ae: Autoencoder,
        *data: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        checkpoint: str | Path | None = None,
        validation: tuple | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    ) -> FitResult:
        """Train ``ae`` in place.

        Args:
            ae: the autoencoder; its device decides where the work runs.
            data: ``x`` ``(N, D_x)`` then the model's covariates ``(N, ...)`` in ``ae.covariates``
                order; ``None`` for a covariate the data lack (the model samples it or says why not).
            transform: applied to each ``x`` minibatch before use (e.g. dynamic binarization).
            checkpoint: file written after every epoch (model, optimisers, RNG states, losses); if it
                exists, the fit resumes after its last epoch. With ``validation`` the best epoch's model
                is also kept, in ``<checkpoint stem>.best<suffix>``.
            validation: held-out ``(x, *covariates)``, scored with the engine's loss after every epoch
                (``transform`` applied once, seeded); ``patience`` stops on it.
            on_epoch: called after every epoch (once its checkpoint is written) with the 1-based epoch and
                ``{"loss", "lr", "val_loss"}`` (the last only with ``validation``), e.g. for TensorBoard.

        Returns:
            ``FitResult`` with ``losses`` ``(E,)`` in nats per datum, ``stats["train_seconds"]``,
            ``stats["lr"]`` ``(E,)``, the learning rate of each epoch, and with ``validation``
            ``stats["val_losses"]`` ``(E,)`` and ``stats["best_epoch"]`` (1-based). Early stopping makes E
            smaller than ``epochs``.

        Raises:
            ValueError: data that do not fit the model, covariates of another length than ``x``, or a checkpoint
                written by an objective with other stepped terms (another penalty).
            Diverged: the loss or a gradient became NaN or infinite, or the loss grew past the divergence
                bound (lower ``lr``); no step with a NaN is applied and the checkpoint keeps the last good epoch.
        """
        data = ae.prepare(*data)
        num_data = check_lengths(data)
        device = next(ae.parameters()).device
        data = _to_device(data, device)
        ae.validate(*_transformed(data, transform))
        strata = self._strata(ae, data)
        world = distributed.world_size()
        if world > 1 and (strata is not None or self.stepped_terms()):
            raise ValueError("distributed training supports plain minibatches of one objective: not "
                             "labelled_per_batch nor a term with an optimiser of its own (a critic)")
        first = _transformed(rows(data, slice(0, self.batch_size * world)), transform)  # one global batch
        self.check(ae, *first)
        val = None if validation is None else Validation(to_device(ae.prepare(*validation), device), transform,
                                                         self.seed)

        pyro.set_rng_seed(self.seed)
        order = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():  # warm-up: lazily created parameters exist after it; its loss is the reference
            start_loss = self.loss(ae, *first, num_data=num_data).item()
        path = self.compile(ae, first, num_data)  # the path of the steps (compile; inference/compiled.py)
        stepped = [(term, term.own_parameters(ae)) for term in self.stepped_terms()]
        owned = {id(p) for _, params in stepped for p in params}
        params = [p for p in ae.parameters() if id(p) not in owned]  # the terms' own are trained by their steps
        optim = make_optimizer(self.optimizer, params, self.lr, self.weight_decay)
        deferred = _defers(device) and fused(optim, params) is not None
        optim = fused(optim, params) if deferred else optim
        term_optims = [term.optimizer(own) for term, own in stepped]
        schedule = make_schedule(optim, self.lr_schedule, self.epochs, self.lr_decay)
        scaler = make_scaler(device, self.amp) if deferred else None
        losses, seconds, stopped = self._resume(ae, optim, schedule, order, checkpoint, device, val, term_optims,
                                                scaler)
        objective = self.loss if world == 1 else distributed.wrap(self.loss, ae, first, num_data, device)
        stepper = Stepper(self, params, optim, start_loss, deferred, scaler)
        rates = [self.lr * SCHEDULES[self.lr_schedule](e, self.epochs, self.lr_decay) for e in range(len(losses))]

        steps = math.ceil((num_data if strata is None else len(strata[1])) / self._unlabelled_per_batch(strata)
                          / world)
        bar = tqdm(total=self.epochs * steps, initial=len(losses) * steps,
                   disable=not (self.progress and distributed.is_main()),
                   desc=f"{type(self).__name__.lower()} {ae.name}", unit="step", dynamic_ncols=True)
        if self.progress:
            tqdm.write(f"{type(self).__name__.lower()} {ae.name}: the {path} path runs the steps")
        ae.train()
        # Pyro checked shapes and supports in the warm-up step above; skipping those checks in every
        # step saves ~10% of a small VAE epoch (benchmarks/svi_overhead.py). NaNs are still caught.
        with pyro.validation_enabled(False), networks_autocast(ae, device, self.amp):
            for epoch in range(len(losses), len(losses) if stopped else self.epochs):
                start, shown = time.perf_counter(), time.perf_counter()
                stepper.new_epoch()
                distributed.reseed(self.seed, epoch)  # ranks > 0: draws of their own, resumable
                rates.append(optim.param_groups[0]["lr"])  # the rate the optimiser uses in this epoch
                for step, idx in enumerate(self._batches(num_data, strata, steps, order, device)):
                    local, weight = (idx, 1.0) if isinstance(idx, tuple) else distributed.shard(idx)
                    with at_epoch(epoch + step / steps):  # training progress, read by schedules (objectives.py)
                        self._term_steps(ae, stepped, term_optims, data, idx, transform, epoch)
                        loss = self._batch_loss(ae, data, local, transform, num_data, strata, objective)
                    stepper.step(loss, weight, sum(map(len, idx)) if isinstance(idx, tuple) else len(idx), epoch)
                    bar.update()
                    if not bar.disable and (not deferred or time.perf_counter() - shown > 1.0):
                        stepper.check(epoch)  # deferred: one read of the device per refresh
                        bar.set_postfix(epoch=epoch + 1, loss=f"{stepper.mean():.3f}")  # running mean of the epoch
                        shown = time.perf_counter()
                stepper.check(epoch)
                seconds += time.perf_counter() - start
                self._check_epoch(ae, first, num_data, start_loss, epoch, device)  # a diverged epoch is not saved
                losses.append(stepper.mean())
                schedule.step()
                best = val is not None and val.score(self.loss, ae, epoch, self.batch_size, device)
                stopped = distributed.agree(val is not None and val.exhausted(self.patience))  # rank 0's curve
                if checkpoint is not None and distributed.is_main():
                    _save(checkpoint, ae, optim, schedule, order, losses, seconds, device,
                          {**({} if val is None else {**val.state(), "stopped": stopped}),
                           **({"term_optims": [o.state_dict() for o in term_optims]} if term_optims else {}),
                           **({} if scaler is None else {"scaler": scaler.state_dict()})})
                    if best:
                        atomic_torch_save({"model": ae.state_dict(), "epoch": epoch + 1}, best_path(checkpoint))
                if on_epoch is not None and distributed.is_main():
                    on_epoch(epoch + 1, {"loss": losses[-1], "lr": rates[-1],
                                         **({} if val is None else {"val_loss": val.losses[-1]})})
                if stopped:
                    break
        bar.close()
        distributed.barrier()  # rank 0's last checkpoint is written before any rank goes on
        ae.eval()
        stats = {"train_seconds": torch.tensor(seconds), "lr": torch.tensor(rates, dtype=torch.float64),
                 "compiled": torch.tensor(path != "pyro")}  # which path ran: compile's answer
        if val is not None:
            stats.update(val_losses=torch.tensor(val.losses, dtype=torch.float64),
                         best_epoch=torch.tensor(-1 if val.best_epoch is None else val.best_epoch + 1))
        return FitResult(losses=torch.tensor(losses, dtype=torch.float64), stats=stats)

    def _check_step(self, loss: float, start: float, epoch: int) -> None:
        """:class:`Diverged` for a NaN or infinite loss, or one past the divergence bound."""
        if not math.isfinite(loss):
            self._stop(f"the loss became {loss} in epoch {epoch + 1}")
        bound = start + self.divergence_factor * (abs(start) + 1)
        if self.divergence_factor and math.isfinite(start) and loss > bound:
            self._stop(f"the loss reached {loss:.4g} nats per datum in epoch {epoch + 1}, against {start:.4g} at "
                       f"the start of the fit (bound {bound:.4g}, divergence_factor={self.divergence_factor:g})")

    def _check_epoch(self, ae: Autoencoder, first: tuple, num_data: int, start: float, epoch: int,
                     device: torch.device) -> None:
        """The divergence check on the first minibatch after the epoch's last step (which no step loss sees);
        the random streams are left as they were, so checking changes no result."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), \
                at_epoch(epoch + 1):  # the objective as it stands at the end of the epoch (schedules)
            value = distributed.all_sum(self.loss(ae, *first, num_data=num_data).detach()) / distributed.world_size()
            self._check_step(value.item(), start, epoch)  # the ranks' mean: all decide alike

    def _stop(self, what: str) -> None:
        raise Diverged(f"{type(self).__name__.lower()} diverged: {what}; the checkpoint, if any, holds the last good "
                       f"epoch. Lower the learning rate (lr={self.lr:g}) and fit "
                       "again into a new run folder, or check the data")

    def _strata(self, ae: Autoencoder, data: tuple) -> tuple[Tensor, Tensor] | None:
        """The labelled and unlabelled indices with ``labelled_per_batch``; None for plain minibatches.

        Raises:
            ValueError: ``labelled_per_batch`` negative or not below ``batch_size``, or a model without a label
                covariate.
        """
        if self.labelled_per_batch == 0:
            return None
        if not 0 < self.labelled_per_batch < self.batch_size:
            raise ValueError(f"labelled_per_batch must be between 0 and batch_size - 1 = {self.batch_size - 1}, "
                             f"got {self.labelled_per_batch}")
        labels = [i for i, c in enumerate(ae.covariates) if c.kind == "label"]
        if not labels:
            raise ValueError(f"labelled_per_batch needs a model with a label covariate (e.g. m2); {ae.name} has none")
        y = data[1 + labels[0]]
        if y is None or bool((y >= 0).all()) or bool((y < 0).all()):
            return None  # one kind only: nothing to balance
        labelled = y >= 0
        return labelled.nonzero().squeeze(1).cpu(), (~labelled).nonzero().squeeze(1).cpu()

    def _unlabelled_per_batch(self, strata: tuple[Tensor, Tensor] | None) -> int:
        return self.batch_size if strata is None else self.batch_size - self.labelled_per_batch

    def _batches(self, num_data: int, strata: tuple[Tensor, Tensor] | None, steps: int, order: torch.Generator,
                 device: torch.device) -> list:
        """One epoch's minibatch indices from ``order``: tensors, or (labelled, unlabelled) pairs with strata."""
        if strata is None:
            global_batch = self.batch_size * distributed.world_size()  # split by the ranks in the step
            return list(torch.randperm(num_data, generator=order).to(device).split(global_batch))
        labelled, unlabelled = strata
        cycles = math.ceil(steps * self.labelled_per_batch / len(labelled))
        stream = torch.cat([labelled[torch.randperm(len(labelled), generator=order)] for _ in range(cycles)])
        parts = unlabelled[torch.randperm(len(unlabelled), generator=order)].split(self._unlabelled_per_batch(strata))
        return [(stream[k * self.labelled_per_batch:(k + 1) * self.labelled_per_batch].to(device), part.to(device))
                for k, part in enumerate(parts)]

    def _term_steps(self, ae: Autoencoder, stepped: list, optims: list, data: tuple, idx, transform,
                    epoch: int) -> None:
        """One step of each stepped term on the minibatch (both strata together); :class:`Diverged` on a NaN loss."""
        if not stepped:
            return
        batch = _transformed(rows(data, torch.cat(idx) if isinstance(idx, tuple) else idx), transform)
        for (term, _), optim in zip(stepped, optims):
            value = term.step(ae, batch, optim)
            if not math.isfinite(value):
                self._stop(f"the loss of {type(term).__name__}'s own step became {value} in epoch {epoch + 1}")

    def _batch_loss(self, ae: Autoencoder, data: tuple, idx, transform, num_data: int,
                    strata: tuple[Tensor, Tensor] | None, objective: Callable[..., Tensor] | None = None) -> Tensor:
        """The loss of one minibatch; a stratified one is each stratum's loss weighted by its share of the data.
        ``objective`` replaces ``self.loss`` (the DDP-wrapped loss under data parallelism)."""
        objective = objective or self.loss
        if strata is None:
            return objective(ae, *_transformed(rows(data, idx), transform), num_data=num_data)
        return sum(len(s) * objective(ae, *_transformed(rows(data, part), transform), num_data=len(s))
                   for s, part in zip(strata, idx)) / num_data

    def _resume(self, ae: Autoencoder, optim: torch.optim.Optimizer, schedule, order: torch.Generator,
                checkpoint: str | Path | None, device: torch.device,
                val: Validation | None, term_optims: list,
                scaler: torch.amp.GradScaler | None = None) -> tuple[list[float], float, bool]:
        """Restore model, optimiser (and the stepped terms' ones), schedule, validation and RNG states from
        ``checkpoint`` if it exists; epoch losses, seconds and whether the fit had stopped early."""
        if checkpoint is None or not Path(checkpoint).exists():
            return [], 0.0, False
        state = load_checkpoint(checkpoint)
        if len(state["losses"]) > self.epochs:
            raise ValueError(f"checkpoint {checkpoint} already holds {len(state['losses'])} epochs, more than "
                             f"epochs={self.epochs}")
        saved = state.get("term_optims", [])
        if len(saved) != len(term_optims):
            raise ValueError(f"checkpoint {checkpoint} holds {len(saved)} optimisers of stepped terms, but this "
                             f"engine's objective has {len(term_optims)}: it was written by another objective")
        ae.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        for term_optim, term_state in zip(term_optims, saved):
            term_optim.load_state_dict(term_state)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if "schedule" in state:
            schedule.load_state_dict(state["schedule"])
        else:  # a checkpoint from before schedules: constant rate, one step per epoch done
            schedule.last_epoch = len(state["losses"])
        schedule.base_lrs = [self.lr] * len(optim.param_groups)  # the engine's rate, not the one saved with Adam
        factor = SCHEDULES[self.lr_schedule](schedule.last_epoch, self.epochs, self.lr_decay)
        for group in optim.param_groups:
            group["lr"] = self.lr * factor
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        order.set_state(state["order_rng"])
        if val is not None:
            val.restore(state)
        return state["losses"].tolist(), float(state["train_seconds"]), bool(state.get("stopped", False))


def best_path(checkpoint: str | Path) -> Path:
    """Where the best validation epoch's model is kept beside ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.best{checkpoint.suffix}")


def _save(path: str | Path, ae: Autoencoder, optim: torch.optim.Optimizer, schedule, order: torch.Generator,
          losses: list[float], seconds: float, device: torch.device, extra: dict) -> None:
    rng = {"torch_rng": torch.get_rng_state(), "order_rng": order.get_state()}
    if device.type == "cuda":
        rng["cuda_rng"] = torch.cuda.get_rng_state(device)
    atomic_torch_save({"model": ae.state_dict(), "optim": optim.state_dict(), "schedule": schedule.state_dict(),
                       "train_seconds": seconds,
                       "losses": torch.tensor(losses, dtype=torch.float64), **rng, **extra}, path)


def _defers(device: torch.device) -> bool:
    """Whether the loop reads nothing back per step (:mod:`aezoo.inference.stepping`): on CUDA."""
    return device.type == "cuda"


def _to_device(data: tuple, device: torch.device) -> tuple:
    """``data`` on ``device``; CPU tensors bound for CUDA go through pinned memory, copied without blocking."""
    if device.type != "cuda":
        return to_device(data, device)
    return tuple(None if d is None else d.pin_memory().to(device, non_blocking=True) if d.device.type == "cpu"
                 else d.to(device) for d in data)


def _transformed(batch: tuple[Tensor, ...], transform: Callable[[Tensor], Tensor] | None) -> tuple[Tensor, ...]:
    return batch if transform is None else (transform(batch[0]), *batch[1:])
