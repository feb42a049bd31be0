#!/usr/bin/env python3
# Pruning inside a DistributedDataParallel job: train, cut 50% of the filters with Taylor importance
# on every rank at once (rank 0 plans, every rank applies, the replicas are compared), fine-tune.
#
#     PYTHONPATH=build/python /usr/bin/python3 -m torch.distributed.run --nproc-per-node 2 \
#         examples/python/prune_ddp.py --train 4096
#
# (torchrun --nproc-per-node 2 ... where torchrun is on the PATH.) Gloo on the CPU; one thread per
# rank by default. Fashion-MNIST from Debian's dataset-fashion-mnist.
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import libprune
import libprune.distributed

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
ap.add_argument("--train", type=int, default=4096, help="training images (of 60000)")
ap.add_argument("--test", type=int, default=2000, help="test images (of 10000)")
ap.add_argument("--epochs", type=int, default=2, help="epochs before the cut, and again after it")
ap.add_argument("--batch", type=int, default=128, help="global batch (split over the ranks)")
ap.add_argument("--ratio", type=float, default=0.5)
ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
args = ap.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(args.threads)
torch.manual_seed(0)  # the same initial model on every rank (DDP also broadcasts rank 0's)


def idx(stem):
    path = next(os.path.join(args.data, stem + e) for e in (".gz", "") if os.path.exists(os.path.join(args.data, stem + e)))
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(data[3])]
    return torch.from_numpy(np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(shape).copy())


def split(prefix, n):
    x = idx(f"{prefix}-images-idx3-ubyte")[:n].float().div(255).sub(0.2860).div(0.3530).unsqueeze(1)
    return TensorDataset(x, idx(f"{prefix}-labels-idx1-ubyte")[:n].long())


train, test = split("train", args.train), split("t10k", args.test)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.conv3, self.bn3 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


model = Net()
ddp = DistributedDataParallel(model)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True)
loader = DataLoader(train, batch_size=args.batch // world, sampler=sampler, drop_last=True)
example = train[0][0].unsqueeze(0)


def run_epochs(ddp, epochs, first):
    for epoch in range(first, first + epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(ddp(x), y).backward()
            opt.step()


def accuracy(m):
    m.eval()
    with torch.no_grad():
        x, y = test.tensors
        return 100.0 * (m(x).argmax(1) == y).float().mean().item()


t0 = time.time()
run_epochs(ddp, args.epochs, 0)
libprune.distributed.sync_buffers(model)  # each rank's last forward moved its own BN statistics
dense_params, dense_top1 = sum(p.numel() for p in model.parameters()), accuracy(model)

# Taylor importance reads .grad: one more batch's gradients, averaged over the ranks by DDP.
ddp.train()
x, y = next(iter(loader))
opt.zero_grad()
F.cross_entropy(ddp(x), y).backward()
ddp, plan = libprune.distributed.prune(ddp, example, optimizer=opt, ratio=args.ratio, importance="taylor",
                                       ignored_layers=[model.fc])
opt.zero_grad()
run_epochs(ddp, args.epochs, args.epochs)
libprune.distributed.sync_buffers(model)
libprune.distributed.check_replicas(model, "after fine-tuning")
pruned_params, pruned_top1 = sum(p.numel() for p in model.parameters()), accuracy(model)
if rank == 0:
    print(f"{world} ranks: params {dense_params} -> {pruned_params} ({dense_params / pruned_params:.2f}x), "
          f"top-1 {dense_top1:.2f}% -> {pruned_top1:.2f}%, conv widths "
          f"{[model.conv1.out_channels, model.conv2.out_channels, model.conv3.out_channels]}, "
          f"replicas equal, {time.time() - t0:.1f} s")
dist.destroy_process_group()
