"""Data-parallel training (aezoo.inference.distributed): 2 gloo processes x batch B train as 1 process x batch 2B.

Why the comparison is exact up to float rounding: the model is ``wae``'s autoencoder (a Delta guide, so the
"ELBO" log p(x, z = encoder(x)) has no random draw at all) fitted by plain ``svi`` in float64. Every rank draws
the same seeded permutation and takes its contiguous share of each global batch of 2B; its loss is weighted by
``W B_r / G`` and DDP averages the gradients, which gives the gradient of the global batch's mean loss, and the
recorded loss is the size-weighted mean of the shares' losses. Only the order of float64 summations differs.
"""

from __future__ import annotations

import os
import socket

import pyro
import pytest
import torch
import torch.multiprocessing as mp

from aezoo.inference import ENGINES, distributed
from aezoo.models import MODELS

B, N = 4, 23  # global batches of 8, 8 and 7: the last is shared 4 + 3 between the ranks


def _problem():
    module = MODELS["wae"]
    cfg = module.Config(x_dim=6, z_dim=2, hidden_dims=(5,))
    torch.manual_seed(0)
    ae = module.build(cfg).double()
    return ae, module.example_data(cfg, N, seed=1)[0].double()


def _engine(batch_size: int, epochs: int):
    return ENGINES["svi"](epochs=epochs, batch_size=batch_size, lr=3e-2, progress=False, seed=3)


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # what torchrun sets
    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    assert distributed.init("cpu") == "cpu"
    try:
        ae, x = _problem()
        fit = _engine(B, 2).fit(ae, x, checkpoint=os.path.join(folder, "checkpoint.pt"))
        torch.save({"losses": fit.losses, "model": ae.state_dict()}, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Run 2 epochs in 2 gloo processes (spawned, as torchrun would start them); their folder."""
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(folder)), nprocs=2, join=True)
    return folder


def test_two_processes_equal_one_with_twice_the_batch(two_processes):
    ae, x = _problem()
    reference = _engine(2 * B, 2).fit(ae, x)
    ranks = [torch.load(two_processes / f"rank{r}.pt") for r in range(2)]
    for run in ranks:  # float64: summation order alone differs, ~1e-15 relative per step
        torch.testing.assert_close(run["losses"], reference.losses, rtol=1e-10, atol=1e-10)
        for name, value in ae.state_dict().items():
            torch.testing.assert_close(run["model"][name], value, rtol=1e-9, atol=1e-10)


def test_resume_under_another_world_size(two_processes):
    ae, x = _problem()
    reference = _engine(2 * B, 3).fit(ae, x)
    resumed_ae, x = _problem()  # epoch 3 in one process from the 2-process checkpoint (global epoch 2)
    resumed = _engine(2 * B, 3).fit(resumed_ae, x, checkpoint=two_processes / "checkpoint.pt")
    torch.testing.assert_close(resumed.losses, reference.losses, rtol=1e-10, atol=1e-10)
    for name, value in ae.state_dict().items():
        torch.testing.assert_close(resumed_ae.state_dict()[name], value, rtol=1e-9, atol=1e-10)


def test_shard_partitions_each_global_batch():
    batch = torch.arange(7)
    parts = [distributed.shard(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p for p, _ in parts]), batch)
    assert [w for _, w in parts] == [2 * 4 / 7, 2 * 3 / 7]  # weights average to 1 over the ranks
    assert distributed.shard(torch.arange(1), 1, 2)[1] == 0.0  # an empty share: one index, weight 0
    assert distributed.shard(batch) == (batch, 1.0)  # outside a process group: the batch itself


def test_outside_a_process_group():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    value = torch.tensor(2.0)
    assert distributed.all_sum(value) is value and distributed.agree(True)


def test_init_without_torchrun_says_how(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        distributed.init("cpu")
