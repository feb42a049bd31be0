#!/usr/bin/env python3
"""libprune's C++ int8 against torch.ao FX int8 on the same architecture, threads and engine.

CIFAR ResNet-20 (Fashion-MNIST shape: 1x28x28, 10 classes), post-training quantized on random
batches by each side (latency does not depend on the weights' values). torch.ao: prepare_fx /
convert_fx with the oneDNN qconfig mapping; libprune: build/libprune-quant-bench (quant::prepare,
calibrate, quant::convert). Both on oneDNN, 2 threads, channels_last inputs, and each shape timed on
freshly converted (freshly packed) weights. Rounds alternate the two sides; prints each round and
the median ratio with its spread (> 1: libprune is faster).

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_int8.py [--rounds 3] [--runs 30]
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


def torch_ao_int8(runs):
    torch.manual_seed(0)
    model = ResNet20()
    with torch.no_grad():
        model.train()
        for _ in range(4):
            model(torch.randn(32, 1, 28, 28))
    model.eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("onednn"), (torch.randn(2, 1, 28, 28),))
    with torch.no_grad():
        for _ in range(8):
            prepared(torch.randn(32, 1, 28, 28))
    out = {}
    for batch in (1, 32):
        fresh = convert_fx(copy.deepcopy(prepared))  # packed for this shape only
        x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        out[batch] = median_ms(fresh, x, runs)
    return out


def libprune_int8(runs):
    exe = os.path.join(ROOT, "build", "libprune-quant-bench")
    text = subprocess.run([exe, "--rounds", "1", "--runs", str(runs)], check=True, capture_output=True, text=True).stdout
    out = {}
    for batch, ms in re.findall(r"batch (\d+): fp32 [\d.]+ ms, int8 ([\d.]+) ms", text):
        out[int(batch)] = float(ms)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    torch.backends.quantized.engine = "onednn"
    torch.set_num_threads(2)
    ratios = {1: [], 32: []}
    for r in range(args.rounds):
        ao = torch_ao_int8(args.runs)
        lp = libprune_int8(args.runs)
        for batch in (1, 32):
            ratios[batch].append(ao[batch] / lp[batch])
            print(f"round {r + 1} batch {batch}: torch.ao FX int8 {ao[batch]:.3f} ms, libprune int8 {lp[batch]:.3f} ms, "
                  f"{ao[batch] / lp[batch]:.2f}x", flush=True)
    for batch in (1, 32):
        v = ratios[batch]
        print(f"batch {batch}: torch.ao / libprune int8 latency {statistics.median(v):.2f}x (rounds {min(v):.2f}x-{max(v):.2f}x); "
              "target >= 1")


if __name__ == "__main__":
    main()
