#!/usr/bin/env python3
"""libprune's C++ int8 against torch.ao FX int8 on the same architecture, threads and engine.

CIFAR ResNet-20 (Fashion-MNIST shape: 1x28x28, 10 classes; batches 1 and 32) by default, or with
--model resnet50 torchvision's ResNet-50 (3x224x224, batch 8), post-training quantized on random
batches by each side (latency does not depend on the weights' values). torch.ao: prepare_fx /
convert_fx with the oneDNN qconfig mapping; libprune: build/libprune-quant-bench (quant::prepare,
calibrate, quant::convert). Both on oneDNN, 2 threads, channels_last inputs, and each shape timed on
freshly converted (freshly packed) weights. Rounds alternate the two sides; prints each round and
the median ratio with its spread (> 1: libprune is faster).

For ResNet-50 it also prints each int8 model's speed-up over two fp32 baselines measured in the same
round: the model as torchvision runs it (eval mode, batch norms as layers, the faster of NCHW and
channels_last: the
baseline torch.ao's int8 figures are usually quoted against) and libprune's fastest fp32 (batch
norms folded into the convolutions, channels_last; printed by libprune-quant-bench).

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_int8.py [--rounds 3] [--runs 30] [--model resnet50]
"""
import argparse
import copy
import os
import re
import statistics
import subprocess
import time

import torch
import torch.nn as nn
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + (self.down(x) if self.down is not None else x))


class ResNet20(nn.Module):
    def __init__(self, in_channels=1, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(3):
                blocks.append(Block(cin, width, stride if b == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def median_ms(fn, x, runs, warmup=5):
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# model: (torch module maker, libprune-quant-bench arguments, input shape, batches)
MODELS = {
    "resnet20": (lambda: ResNet20(), [], (1, 28, 28), (1, 32)),
    "resnet50": (lambda: torchvision.models.resnet50(),
                 ["--model", "resnet50", "--in-channels", "3", "--size", "224", "--test-images", "8"], (3, 224, 224), (8,)),
}


def torch_side(name, runs):
    """torch.ao FX int8 per batch, and (ResNet-50) the fp32 model as torchvision runs it."""
    make, _, shape, batches = MODELS[name]
    torch.manual_seed(0)
    model = make()
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.randn(8, *shape))
    model.eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("onednn"), (torch.randn(2, *shape),))
    with torch.no_grad():
        for _ in range(8):
            prepared(torch.randn(8, *shape))
    int8, fp32 = {}, {}
    for batch in batches:
        fresh = convert_fx(copy.deepcopy(prepared))  # packed for this shape only
        x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
        int8[batch] = median_ms(fresh, x, runs)
        if name != "resnet20":  # its faster layout of the two
            fp32[batch] = min(median_ms(model.to(memory_format=fmt), x.contiguous(memory_format=fmt), runs)
                              for fmt in (torch.contiguous_format, torch.channels_last))
    return int8, fp32


def libprune_side(name, runs):
    """libprune's int8 and its BN-folded channels_last fp32, per batch."""
    _, extra, _, batches = MODELS[name]
    exe = os.path.join(ROOT, "build", "libprune-quant-bench")
    cmd = [exe, "--rounds", "1", "--runs", str(runs), "--batches", ",".join(map(str, batches))] + extra
    if name != "resnet20":
        cmd += ["--qat-step", "0"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    int8, fp32 = {}, {}
    for batch, f, q in re.findall(r"batch (\d+): fp32 ([\d.]+) ms, int8 ([\d.]+) ms", text):
        int8[int(batch)], fp32[int(batch)] = float(q), float(f)
    return int8, fp32


def spread(v):
    return f"{statistics.median(v):.2f}x (rounds {min(v):.2f}x-{max(v):.2f}x)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    args = ap.parse_args()
    torch.backends.quantized.engine = "onednn"
    torch.set_num_threads(2)
    batches = MODELS[args.model][3]
    ratios = {b: [] for b in batches}
    speedups = {b: {k: [] for k in ("lp/tv", "ao/tv", "lp/lp", "ao/lp")} for b in batches}
    for r in range(args.rounds):
        ao, tv = torch_side(args.model, args.runs)
        lp, lp32 = libprune_side(args.model, args.runs)
        for b in batches:
            ratios[b].append(ao[b] / lp[b])
            print(f"round {r + 1} batch {b}: torch.ao FX int8 {ao[b]:.3f} ms, libprune int8 {lp[b]:.3f} ms, "
                  f"{ao[b] / lp[b]:.2f}x", flush=True)
            if tv:
                s = speedups[b]
                s["lp/tv"].append(tv[b] / lp[b])
                s["ao/tv"].append(tv[b] / ao[b])
                s["lp/lp"].append(lp32[b] / lp[b])
                s["ao/lp"].append(lp32[b] / ao[b])
                print(f"round {r + 1} batch {b}: fp32 as torchvision runs it {tv[b]:.3f} ms, libprune fp32 (BN folded) "
                      f"{lp32[b]:.3f} ms", flush=True)
    for b in batches:
        print(f"batch {b}: torch.ao / libprune int8 latency {spread(ratios[b])}; target >= 1")
        if speedups[b]["lp/tv"]:
            s = speedups[b]
            print(f"batch {b}: int8 speed-up over fp32 as torchvision runs it: libprune {spread(s['lp/tv'])}, "
                  f"torch.ao {spread(s['ao/tv'])}")
            print(f"batch {b}: int8 speed-up over libprune's BN-folded fp32: libprune {spread(s['lp/lp'])}, "
                  f"torch.ao {spread(s['ao/lp'])}")


if __name__ == "__main__":
    main()
