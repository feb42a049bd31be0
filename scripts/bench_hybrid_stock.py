#!/usr/bin/env python3
"""The stock tools' prune-then-quantize pipeline against libprune's hybrid recipe, side by side.

Both start from the same CIFAR ResNet-20 on Fashion-MNIST with the same data, optimizer and LR
schedule as configs/fashion_mnist_resnet20_hybrid.json (SGD, Nesterov, one-cycle restarted at epoch
4), and print the same four rows (dense fp32, pruned, int8, pruned+int8) with top-1, weights file
size and latency at batch 1 and 32 (fp32 channels_last; int8 on freshly converted packs per shape).

  stock:    4 dense epochs, Torch-Pruning (DepGraph) L2 at epochs 4, 5, 6 to 50% of the filters (fc kept),
            fine-tuning to epoch 7, then torch.ao FX QAT (oneDNN qconfig) over epochs 8-9, convert_fx;
            int8 is the same QAT of the dense model (the stock int8 row)
  libprune: build/libprune-run configs/fashion_mnist_resnet20_hybrid.json (its summary.json)

Torch-Pruning is not a Debian package and is used only here, as the reference: fetch
github:VainF/Torch-Pruning, unpack it (git archive) into a folder and put that on PYTHONPATH.

  PYTHONPATH=build/python:/tmp/tp /usr/bin/python3 scripts/bench_hybrid_stock.py [--limit-train N]
      [--skip-libprune] [--summary runs/fashion_mnist_resnet20_hybrid/summary.json]
"""
import argparse
import copy
import gzip
import io
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.ao.quantization import get_default_qat_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_int8 import ResNet20  # noqa: E402  (the same architecture as the C++ zoo's cifar_resnet20)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"


def load(split, limit=0):
    def read(name):
        with gzip.open(os.path.join(DATA, name), "rb") as f:
            return f.read()
    images = np.frombuffer(read(f"{split}-images-idx3-ubyte.gz"), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    labels = np.frombuffer(read(f"{split}-labels-idx1-ubyte.gz"), np.uint8, offset=8)
    x = (torch.from_numpy(images.copy()).float() / 255 - 0.2860) / 0.3530
    y = torch.from_numpy(labels.copy()).long()
    return (x[:limit], y[:limit]) if limit else (x, y)


def lr_at(t, epochs=10, restart=4, lr=0.1, scale=0.4):
    """The recipe's one-cycle schedule restarted at epoch `restart` (libprune's Trainer::lr_at)."""
    begin, end, base = (restart, epochs, lr * scale) if t >= restart else (0, restart, lr)
    u = (t - begin) / (end - begin)
    if u < 0.3:
        return base / 25 + (base - base / 25) * u / 0.3
    return base / 1e4 + 0.5 * (base - base / 1e4) * (1 + math.cos(math.pi * (u - 0.3) / 0.7))


def train_epoch(model, opt, data, epoch, batch=128):
    x, y = data
    g = torch.Generator().manual_seed(epoch)
    order = torch.randperm(len(x), generator=g)
    steps = len(x) // batch
    model.train()
    for i in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(epoch + i / steps)
        idx = order[i * batch:(i + 1) * batch]
        opt.zero_grad()
        F.cross_entropy(model(x[idx].contiguous(memory_format=torch.channels_last)), y[idx]).backward()
        opt.step()


def accuracy(model, data):
    x, y = data
    model.eval()
    with torch.no_grad():
        hits = sum((model(x[i:i + 256].contiguous(memory_format=torch.channels_last)).argmax(1) == y[i:i + 256]).sum().item()
                   for i in range(0, len(x), 256))
    return 100.0 * hits / len(x)


def file_kib(model):
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell() / 1024


def median_ms(fn, x, runs=30):
    with torch.no_grad():
        for _ in range(5):
            fn(x)
        t = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            t.append(time.perf_counter() - t0)
    return 1000 * statistics.median(t)


def latency(model, convert=None):
    """(b1, b32) ms; an int8 model is converted afresh for each shape (oneDNN caches per pack and shape)."""
    out = []
    for b in (1, 32):
        x = torch.randn(b, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        m = convert(copy.deepcopy(model)) if convert else model.eval()
        out.append(median_ms(m, x))
    return out


def qat(model, train, epochs, start):
    """torch.ao FX QAT for `epochs` epochs from `start` (observers and BN frozen for the last), converted."""
    example = (torch.randn(1, 1, 28, 28),)
    prepared = prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping("onednn"), example)
    opt = torch.optim.SGD(prepared.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    for e in range(start, start + epochs):
        if e == start + epochs - 1 and epochs > 1:
            prepared.apply(torch.ao.quantization.disable_observer)
            prepared.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
        train_epoch(prepared, opt, train, e)
    return prepared


def stock(train, test):
    import torch_pruning as tp
    torch.backends.quantized.engine = "onednn"
    torch.manual_seed(0)
    model = ResNet20().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    rows = {}
    for e in range(4):
        train_epoch(model, opt, train, e)
    dense = copy.deepcopy(model)
    rows["dense"] = (accuracy(dense, test), file_kib(dense), *latency(dense))
    example = torch.randn(1, 1, 28, 28)
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                       iterative_steps=3, pruning_ratio=0.5, ignored_layers=[model.fc])
    for e in range(4, 8):
        if e in (4, 5, 6):
            pruner.step()
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        train_epoch(model, opt, train, e)
    rows["pruned"] = (accuracy(model, test), file_kib(model), *latency(model))
    q_dense = qat(dense, train, 2, 8)
    q_pruned = qat(model, train, 2, 8)
    for key, prepared in (("int8", q_dense), ("pruned+int8", q_pruned)):
        int8 = convert_fx(copy.deepcopy(prepared).eval())
        rows[key] = (accuracy(int8, test), file_kib(int8),
                     *latency(prepared, lambda m: convert_fx(m.eval())))
    return rows


def libprune_rows(summary_path, skip):
    if not skip:
        subprocess.run([os.path.join(ROOT, "build", "libprune-run"),
                        os.path.join(ROOT, "configs", "fashion_mnist_resnet20_hybrid.json"),
                        "--set", "training.progress=false"], check=True, cwd=os.path.join(ROOT, "build"))
    s = json.load(open(summary_path))
    names = {"dense": "dense", "pruned": "pruned", "int8": "int8", "pruned_int8": "pruned+int8"}
    return {names[k]: (s[k]["accuracy"], s[k]["size_bytes"] / 1024, s[k]["latency_ms_b1"], s[k]["latency_ms_b32"])
            for k in names if k in s}


def table(title, rows):
    print(f"\n{title}\n| row | top-1 | file | batch 1 | batch 32 |\n| --- | --- | --- | --- | --- |")
    d = rows["dense"]
    for k, (acc, kib, b1, b32) in rows.items():
        extra = "" if k == "dense" else f" ({d[2] / b1:.2f}x)"
        extra32 = "" if k == "dense" else f" ({d[3] / b32:.2f}x)"
        print(f"| {k} | {acc:.2f}% | {kib:.0f} KiB | {b1:.3f} ms{extra} | {b32:.3f} ms{extra32} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit-train", type=int, default=0, help="train on the first N images (a quick check)")
    ap.add_argument("--skip-libprune", action="store_true", help="read an existing summary instead of running")
    ap.add_argument("--summary", default=os.path.join(ROOT, "build", "runs", "fashion_mnist_resnet20_hybrid",
                                                      "summary.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    train, test = load("train", args.limit_train), load("t10k")
    t0 = time.time()
    ours = libprune_rows(args.summary, args.skip_libprune)
    t1 = time.time()
    theirs = stock(train, test)
    t2 = time.time()
    table(f"libprune hybrid recipe ({(t1 - t0) / 60:.1f} min)", ours)
    table(f"stock: Torch-Pruning + torch.ao FX QAT ({(t2 - t1) / 60:.1f} min)", theirs)
    for k in ("pruned+int8",):
        a, b = ours[k], theirs[k]
        print(f"\n{k}: libprune / stock latency b1 {b[2] / a[2]:.2f}x, b32 {b[3] / a[3]:.2f}x faster; "
              f"top-1 {a[0] - b[0]:+.2f} pt; file {a[1]:.0f} vs {b[1]:.0f} KiB")


if __name__ == "__main__":
    main()
