#!/usr/bin/env python3
"""Times libprune.prune on torchvision resnet50 (50% L2, fc ignored, verification included, 1x3x224x224)
side by side with one forward pass of the same model on the same input with autograd recording, in
alternating rounds on fresh models, and prints the ratio (target: at most 2x) with its spread. Also
checks the parameter count against Torch-Pruning's 6,917,640 for the same setting.

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_prune_python.py [--runs 7]
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
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--return-freed-memory", action="store_true",
                    help="leave glibc's malloc at its defaults (see libprune.retain_freed_memory)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    retained = not args.return_freed_memory and libprune.retain_freed_memory()
    x = torch.randn(1, 3, 224, 224)
    forward, prune, params = [], [], None
    for _ in range(args.runs + 1):  # the first round warms up both
        model = torchvision.models.resnet50().eval()
        t0 = time.perf_counter()
        out = model(x)  # autograd records, as the trace's forward does
        forward.append(time.perf_counter() - t0)
        del out
        model = torchvision.models.resnet50()
        t0 = time.perf_counter()
        libprune.prune(model, x, ratio=0.5, importance="l2", ignored_layers=[model.fc])
        prune.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in model.parameters())
    forward, prune = forward[1:], prune[1:]
    ratios = sorted(p / f for p, f in zip(prune, forward))
    print(f"resnet50 50% L2 from Python, {torch.get_num_threads()} threads, freed memory "
          f"{'retained' if retained else 'returned to the OS'}: params {params:,} "
          f"(Torch-Pruning 6,917,640: ratio {params / REFERENCE_PARAMS:.4f})")
    print(f"forward with autograd: median {statistics.median(forward):.4f} s "
          f"(min {min(forward):.4f}, max {max(forward):.4f})")
    print(f"prune (trace, group, score, apply, verify): median {statistics.median(prune):.4f} s "
          f"(min {min(prune):.4f}, max {max(prune):.4f})")
    print(f"prune / forward, round by round: median {statistics.median(ratios):.2f}x "
          f"(min {ratios[0]:.2f}x, max {ratios[-1]:.2f}x) over {args.runs} rounds; target <= 2x")


if __name__ == "__main__":
    main()
