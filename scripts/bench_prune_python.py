#!/usr/bin/env python3
"""Times libprune.prune on torchvision resnet50 (50% L2, fc ignored, 1x3x224x224): the whole step
(trace, group, score, apply, verify), median of N runs on fresh models, and checks the parameter
count against Torch-Pruning's 6,917,640 for the same setting.

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_prune_python.py [--runs 5]
"""
import argparse
import statistics
import time

import torch
import torchvision

import libprune

REFERENCE_PARAMS = 6_917_640


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--return-freed-memory", action="store_true",
                    help="leave glibc's malloc at its defaults (see libprune.retain_freed_memory)")
    args = ap.parse_args()
    retained = not args.return_freed_memory and libprune.retain_freed_memory()
    x = torch.randn(1, 3, 224, 224)
    times, params = [], None
    for _ in range(args.runs):
        model = torchvision.models.resnet50()
        t0 = time.perf_counter()
        libprune.prune(model, x, ratio=0.5, importance="l2", ignored_layers=[model.fc])
        times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in model.parameters())
    print(f"resnet50 50% L2 from Python, {torch.get_num_threads()} threads, freed memory "
          f"{'retained' if retained else 'returned to the OS'}: params {params:,} "
          f"(Torch-Pruning 6,917,640: ratio {params / REFERENCE_PARAMS:.4f})")
    print(f"prune time: median {statistics.median(times):.3f} s of {args.runs} runs, min {min(times):.3f} s")


if __name__ == "__main__":
    main()
