"""libprune.distributed: pruning inside a DistributedDataParallel job (Gloo on loopback)."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

import libprune
import libprune.distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_needs_an_initialised_group_and_a_ddp_model():
    x = torch.randn(2, 1, 6, 6)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised. Fix: call"):
        libprune.distributed.prune(small(), x, ratio=0.5)


def test_one_rank_cuts_keeps_the_optimizer_and_rewraps(one_rank):
    model = small()
    x = torch.randn(4, 1, 6, 6)
    with pytest.raises(TypeError, match="expected a torch.nn.parallel.DistributedDataParallel"):
        libprune.distributed.prune(model, x, ratio=0.5)
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ddp(x).sum().backward()
    opt.step()
    # A bad option fails on rank 0 and every rank hears of it; nothing changes.
    with pytest.raises(RuntimeError, match="rank 0 could not plan the cut, nothing was changed"):
        libprune.distributed.prune(ddp, x, optimizer=opt, ratio=2.0)
    assert model[0].out_channels == 8
    new, plan = libprune.distributed.prune(ddp, x, optimizer=opt, ratio=0.5, importance="taylor",
                                           ignored_layers=[model[7]])
    assert new is not ddp and new.module is model and not new.broadcast_buffers
    assert model[0].weight.shape[0] == 4 and not plan.empty()
    assert opt.state[model[0].weight]["momentum_buffer"].shape == model[0].weight.shape
    new(x).sum().backward()  # the new wrapper's buckets fit the new shapes
    opt.step()
    libprune.distributed.check_replicas(model, "after a step")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_with_torchrun_run_the_example():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Debian's torchrun (torch 1.13 on Python 3.11) fails with its default --redirects/--tee of 0
    # (IntFlag iteration skips NONE); 1 and 1 work.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--redirects", "1", "--tee", "1",
           "--master_port", str(free_port()),
           os.path.join(ROOT, "examples", "python", "prune_ddp.py"), "--train", "512", "--test", "200", "--epochs", "1",
           "--batch", "64"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 ranks: params" in out.stdout and "replicas equal" in out.stdout
    assert "conv widths [16, 32, 32]" in out.stdout  # 50% of each group, the same on both ranks
