"""Data-parallel training of the gradient engines over processes, GPUs and machines.

Every process (rank ``r`` of ``W``) holds the whole autoencoder and the whole training data. The
loop draws one seeded permutation per epoch, the same on every rank, cuts it into global minibatches
of ``W B`` data (``B`` = ``batch_size``, per process) and rank ``r`` takes the ``r``-th of ``W``
near-equal shares of each (:func:`shard`, the split of ``torch.utils.data.DistributedSampler``
without its padding). ``num_data`` stays the full ``N``. The engine's loss is computed inside
:class:`LossModule`, an ``nn.Module`` whose parameters are the autoencoder's, and that module is
wrapped in PyTorch's ``DistributedDataParallel`` [1], which averages the gradients over the ranks
during ``backward``. Each rank weights its loss by ``W B_r / G`` (its share ``B_r`` of the global
batch of ``G``), so the averaged gradient is exactly that of one process on the global batch, and
the recorded epoch loss is the same size-weighted mean: ``W`` processes with batch ``B`` train as one
process with batch ``W B`` (up to float summation order, and to the random draws of the objective,
which differ between ranks).

Only rank 0 writes checkpoints, run folders and progress bars. A checkpoint holds the global epoch,
the model, the optimiser and the random state of the permutation, nothing per rank, so a fit resumes
under another world size. Ranks other than 0 reseed their own random stream (the objective's draws)
at the start of every epoch from ``(seed, rank, epoch)``, so their draws are independent of rank 0's
and a resumed fit continues them exactly.

Start processes with ``torchrun`` [2], which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``: ``torchrun --nproc_per_node=2 -m aezoo fit vae --distributed``.
:func:`init` reads them (NCCL on CUDA, gloo on CPU) and pins each process to GPU ``LOCAL_RANK``.

References:
    1. PyTorch Distributed: Experiences on Accelerating Data Parallel Training, Li et al., arXiv:2006.15704.
    2. torchrun (Elastic Launch), https://pytorch.org/docs/stable/elastic/run.html.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 outside a process group."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes ``W``, 1 outside a process group."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0 (and outside a process group): the process that writes files."""
    return rank() == 0


def init(device: str = "cpu") -> str:
    """Join the process group that ``torchrun`` describes in the environment; the device this rank uses.

    Args:
        device: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL, one GPU per process: ``cuda:LOCAL_RANK``).

    Returns:
        The device name for this process, e.g. ``"cuda:1"``.

    Raises:
        ValueError: the environment lacks torchrun's variables (the command was not started by
            ``torchrun``), or CUDA is asked for with fewer GPUs than local processes.
    """
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        raise ValueError(f"--distributed needs the process group that torchrun sets up ({', '.join(missing)} unset): "
                         "start it as torchrun --nproc_per_node=N -m aezoo fit ... --distributed")
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} needs GPU {local}, but this machine has "
                             f"{torch.cuda.device_count()}; use --nproc_per_node <= the GPUs per machine")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (a no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Tensor, r: int | None = None, w: int | None = None) -> tuple[Tensor, float]:
    """Rank ``r``'s share of a global minibatch of indices ``(G,)`` and the weight of its loss.

    The shares are ``batch.tensor_split(W)``: contiguous, sizes differing by at most one. The weight
    ``W B_r / G`` makes DDP's average of the ranks' gradients the gradient of the global batch's mean
    loss. A rank whose share is empty (``G < W``) gets the batch's first index with weight 0.
    """
    r = rank() if r is None else r
    w = world_size() if w is None else w
    if w == 1:
        return batch, 1.0
    part = batch.tensor_split(w)[r]
    if len(part) == 0:
        return batch[:1], 0.0
    return part, w * len(part) / len(batch)


def all_sum(value: Tensor) -> Tensor:
    """``value`` summed over the ranks (a new tensor; itself outside a process group). On NCCL this queues
    the reduction on the device and does not wait for it."""
    if not active():
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value


def agree(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. an early stop decided on its validation curve)."""
    if not active():
        return flag
    box = [flag]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if active():
        dist.barrier()


class LossModule(nn.Module):
    """An ``nn.Module`` whose forward is an engine's loss and whose parameters are the autoencoder's, for DDP.

    Args:
        loss: ``loss(ae, *batch, num_data=N) -> Tensor``, the engine's differentiable loss.
        ae: the autoencoder (a submodule, so ``parameters()`` are its own).
    """

    def __init__(self, loss: Callable[..., Tensor], ae: nn.Module) -> None:
        super().__init__()
        self.ae = ae
        self._loss = loss

    def forward(self, *batch: Tensor, num_data: int) -> Tensor:
        return self._loss(self.ae, *batch, num_data=num_data)


def wrap(loss: Callable[..., Tensor], ae: nn.Module, first: tuple, num_data: int,
         device: torch.device) -> Callable[..., Tensor]:
    """The engine's loss routed through ``DistributedDataParallel`` (rank 0's parameters broadcast to all).

    One probe backward on ``first`` (under a forked random stream, so no result changes) finds parameters
    the loss does not use; only then does DDP search for unused parameters in every step.
    """
    params = [p for p in ae.parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        grads = torch.autograd.grad(loss(ae, *first, num_data=num_data), params, allow_unused=True)
    unused = any(g is None for g in grads)
    module = nn.parallel.DistributedDataParallel(
        LossModule(loss, ae), device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=unused)
    return lambda _ae, *batch, num_data: module(*batch, num_data=num_data)


def reseed(seed: int, epoch: int) -> None:
    """On ranks other than 0, seed this rank's stream for ``epoch`` from ``(seed, rank, epoch)``."""
    r = rank()
    if r:
        torch.manual_seed((seed * 1_000_003 + r * 7_919 + epoch) % (2**63))
