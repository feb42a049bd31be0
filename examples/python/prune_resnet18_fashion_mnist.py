#!/usr/bin/env python3
# %% [markdown]
# # Gradual pruning of torchvision's ResNet-18 on Fashion-MNIST, in an ordinary PyTorch loop
#
# libprune's criteria and schedules inside a plain training loop: train dense, prune 50% of the
# filters on an AGP schedule while training, fine-tune, and compare dense against pruned (params,
# MACs, file size, latency at batch 1 and 32, accuracy). Run it as a script or cell by cell:
#
#     PYTHONPATH=build/python /usr/bin/python3 examples/python/prune_resnet18_fashion_mnist.py --train 3000 --epochs 3
#
# The dense model first trains through its own LR cycle (--dense-epochs), so "dense" in the table
# is a converged model, not a snapshot taken mid-schedule; pruning and fine-tuning then run in a
# second, restarted cycle (--epochs), cutting at the starts of its first two epochs.
#
# Defaults are small so it finishes in minutes on 2 cores; --train 60000 uses the whole set.

# %%
import argparse
import gzip
import io
import os
import statistics
import sys
import time

import numpy as np
import torch
import torchvision

import libprune

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
ap.add_argument("--train", type=int, default=3000, help="training images (of 60000)")
ap.add_argument("--dense-epochs", type=int, default=2, help="epochs of dense training before pruning")
ap.add_argument("--epochs", type=int, default=3, help="epochs of pruning and fine-tuning")
ap.add_argument("--ratio", type=float, default=0.5)
ap.add_argument("--importance", default="l2")
ap.add_argument("--threads", type=int, default=os.cpu_count())
args = ap.parse_args([] if "ipykernel" in sys.modules else None)
torch.manual_seed(0)
torch.set_num_threads(args.threads)
# Freed activations stay in the process instead of being faulted in again every step (2-5x on a VM).
libprune.retain_freed_memory()

# %% Fashion-MNIST from Debian's dataset-fashion-mnist (gzipped IDX)
def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape).copy())

def load(split):
    prefix = "train" if split == "train" else "t10k"
    find = lambda stem: next(os.path.join(args.data, stem + ext) for ext in (".gz", "")
                             if os.path.exists(os.path.join(args.data, stem + ext)))
    x = idx(find(f"{prefix}-images-idx3-ubyte")).float().div(255).sub(0.2860).div(0.3530).unsqueeze(1)
    return x, idx(find(f"{prefix}-labels-idx1-ubyte")).long()

x_train, y_train = load("train")
x_test, y_test = load("test")
x_train, y_train = x_train[:args.train], y_train[:args.train]

# %% ResNet-18 for 1x28x28 inputs: a 3x3 stem without the max-pool
model = torchvision.models.resnet18(num_classes=10)
model.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
model.maxpool = torch.nn.Identity()
model = model.to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
steps_per_epoch = (len(x_train) + 127) // 128
def one_cycle(epochs, max_lr):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=max(1, epochs) * steps_per_epoch)
sched_lr = one_cycle(args.dense_epochs, 0.05)
example = x_test[:1].contiguous(memory_format=torch.channels_last)

# %% The pruning schedule: AGP from the end of the dense phase; the cubic's first point (ratio 0)
# is the last dense epoch, so the cuts fall at the starts of the first two pruning epochs.
pruner = libprune.Pruner(model, example, importance=args.importance, ignored_layers=[model.fc], round_to=8)
d = args.dense_epochs
schedule = libprune.Schedule("agp", ratio=args.ratio, start_epoch=max(0, d - 1), end_epoch=max(d, 1) + min(1, args.epochs - 1))

def evaluate():
    model.eval()
    with torch.no_grad():
        correct = sum((model(x_test[i:i + 500].contiguous(memory_format=torch.channels_last)).argmax(1) ==
                       y_test[i:i + 500]).sum().item() for i in range(0, len(x_test), 500))
    return 100.0 * correct / len(x_test)

def latency(batch, runs=10):
    model.eval()
    x = x_test[:batch].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)

def figures(accuracy):
    macs, params = libprune.count_ops(model, example)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return dict(accuracy=accuracy, params=params, macs=macs, size_bytes=buf.tell(),
                latency_ms_b1=latency(1), latency_ms_b32=latency(32))

# %% Train: an ordinary loop, with one call where the schedule says to cut
dense, accuracy = None, None
for epoch in range(args.dense_epochs + args.epochs):
    if epoch == args.dense_epochs and epoch > 0:
        sched_lr = one_cycle(args.epochs, 0.02)  # a restarted, lower cycle for pruning and fine-tuning
    if schedule.prunes_at(epoch):
        if dense is None:
            dense = figures(accuracy if accuracy is not None else evaluate())
        if args.importance == "taylor":  # gradients of one batch for |w * dL/dw|
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model.train()(x_train[:128].contiguous(memory_format=torch.channels_last)),
                                              y_train[:128]).backward()
        plan = pruner.step(ratio=schedule.ratio_at(epoch), optimizer=opt)
        model.to(memory_format=torch.channels_last)
        print(f"epoch {epoch}: pruned to ratio {schedule.ratio_at(epoch):.3f} ({len(plan.groups)} groups)")
    model.train()
    perm = torch.randperm(len(x_train))
    t0, loss_sum = time.time(), 0.0
    for i in range(steps_per_epoch):
        idx_b = perm[i * 128:(i + 1) * 128]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_train[idx_b].contiguous(memory_format=torch.channels_last)),
                                                 y_train[idx_b])
        loss.backward()
        opt.step()
        sched_lr.step()
        loss_sum += loss.item()
    accuracy = evaluate()
    print(f"epoch {epoch}: loss {loss_sum / steps_per_epoch:.4f}, top-1 {accuracy:.2f}%, {time.time() - t0:.1f} s")

pruned = figures(accuracy)
dense = dense or pruned

# %% Dense against pruned
print(f"\n{'':16} {'dense':>12} {'pruned':>12} {'ratio':>8}")
for label, key, scale in (("params (M)", "params", 1e-6), ("MACs (M)", "macs", 1e-6), ("file size (MB)", "size_bytes", 1e-6),
                          ("latency b1 (ms)", "latency_ms_b1", 1), ("latency b32 (ms)", "latency_ms_b32", 1)):
    a, b = dense[key] * scale, pruned[key] * scale
    print(f"{label:16} {a:12.3f} {b:12.3f} {a / b:7.2f}x")
print(f"{'top-1 (%)':16} {dense['accuracy']:12.2f} {pruned['accuracy']:12.2f} {pruned['accuracy'] - dense['accuracy']:+7.2f} pt")
