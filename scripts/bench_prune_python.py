#!/usr/bin/env python3
"""Times libprune.prune on torchvision resnet50 (50% L2, fc ignored, verification included, 1x3x224x224)
side by side with one forward pass of the same model on the same input with autograd recording, in
alternating rounds on fresh models, and prints the ratio (target: at most 2x) with its spread, for
the default verification (values: one more forward of the dense model, masked) and for shapes only
(verify_values=False). Also checks the parameter count against Torch-Pruning's 6,917,640.

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
    forward, prune, shapes_only, params = [], [], [], None

    def timed_prune(**options):
        model = torchvision.models.resnet50()
        t0 = time.perf_counter()
        libprune.prune(model, x, ratio=0.5, importance="l2", ignored_layers=[model.fc], **options)
        return time.perf_counter() - t0, sum(p.numel() for p in model.parameters())

    for _ in range(args.runs + 1):  # the first round warms up all three
        model = torchvision.models.resnet50().eval()
        t0 = time.perf_counter()
        out = model(x)  # autograd records, as the trace's forward does
        forward.append(time.perf_counter() - t0)
        del out
        seconds, params = timed_prune()
        prune.append(seconds)
        shapes_only.append(timed_prune(verify_values=False)[0])
    forward, prune, shapes_only = forward[1:], prune[1:], shapes_only[1:]
    print(f"resnet50 50% L2 from Python, {torch.get_num_threads()} threads, freed memory "
          f"{'retained' if retained else 'returned to the OS'}: params {params:,} "
          f"(Torch-Pruning 6,917,640: ratio {params / REFERENCE_PARAMS:.4f})")
    print(f"forward with autograd: median {statistics.median(forward):.4f} s "
          f"(min {min(forward):.4f}, max {max(forward):.4f})")
    for label, times in (("verifying values (default)", prune), ("verifying shapes only", shapes_only)):
        ratios = sorted(p / f for p, f in zip(times, forward))
        print(f"prune, {label}: median {statistics.median(times):.4f} s (min {min(times):.4f}, max {max(times):.4f}); "
              f"/ forward, round by round: median {statistics.median(ratios):.2f}x (min {ratios[0]:.2f}x, "
              f"max {ratios[-1]:.2f}x) over {args.runs} rounds; target <= 2x")

if __name__ == "__main__":
    main()
