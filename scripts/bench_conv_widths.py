#!/usr/bin/env python3
"""Why batch-32 latency falls short of the MAC ratio: the default recipe's convolutions, dense
against 50% pruned, timed one by one.

Each 3x3 convolution of the CIFAR ResNet-20 that the default recipe prunes (16/32/64 channels at
28/14/7 pixels) is timed beside its pruned twin (8/16/32 channels) at the same batch, threads and
layout, calls alternating so both see the same machine. Pruning half the channels on both sides
of a convolution removes 4x its MACs; the table shows what that buys in time per stage, and the
throughput (GFLOP/s) that explains it. The last line weighs the stages as the model does (6, 5
and 5 such convolutions, over 90% of its MACs): about what the convolutions alone can give the whole
model, before the stem, the strided and 1x1 convolutions and the elementwise ops.

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_conv_widths.py [--batch 32] [--threads 2] [--nchw]
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

# (dense channels, pixels per side, how many such same-width 3x3 convs ResNet-20 has)
STAGES = [(16, 28, 6), (32, 14, 5), (64, 7, 5)]


def alternate(calls, runs, warmup):
    for _ in range(warmup):
        for c in calls:
            c()
    times = [[] for _ in calls]
    for _ in range(runs):
        for i, c in enumerate(calls):
            t0 = time.perf_counter()
            c()
            times[i].append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of channels pruned")
    ap.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    ap.add_argument("--return-freed-memory", action="store_true", help="leave glibc's malloc at its defaults")
    a = ap.parse_args()
    if not 0 <= a.ratio < 1 or a.batch < 1 or a.threads < 1 or a.runs < 1:
        ap.error("need 0 <= --ratio < 1 and --batch, --threads, --runs >= 1")
    try:
        import libprune
        retained = not a.return_freed_memory and libprune.retain_freed_memory()
    except ImportError:
        retained = False  # the figures then include page faults on every output (see README)
    torch.set_num_threads(a.threads)
    fmt = torch.contiguous_format if a.nchw else torch.channels_last
    torch.manual_seed(0)
    print(f"batch {a.batch}, {a.threads} threads, {'NCHW' if a.nchw else 'channels_last'}, "
          f"freed memory {'retained' if retained else 'returned to the OS'}, median of {a.runs} alternating calls")
    print(f"{'3x3 conv':<22}{'dense ms':>10}{'pruned ms':>11}{'speedup':>9}{'MACs':>7}{'GFLOP/s dense':>15}{'pruned':>8}")
    total_dense = total_pruned = 0.0
    with torch.inference_mode():
        for width, side, count in STAGES:
            pruned = max(1, round(width * (1 - a.ratio)))
            convs = []
            for c in (width, pruned):
                x = torch.randn(a.batch, c, side, side).contiguous(memory_format=fmt)
                w = torch.randn(c, c, 3, 3).contiguous(memory_format=fmt)
                b = torch.randn(c)  # batch norm folded in: a bias
                convs.append(lambda x=x, w=w, b=b: F.conv2d(x, w, b, padding=1))
            dense_ms, pruned_ms = alternate(convs, a.runs, warmup=20)
            flops = [2.0 * a.batch * side * side * c * c * 9 for c in (width, pruned)]
            print(f"{f'{width}->{pruned} ch at {side}x{side}':<22}{dense_ms:>10.3f}{pruned_ms:>11.3f}"
                  f"{dense_ms / pruned_ms:>8.2f}x{flops[0] / flops[1]:>6.1f}x"
                  f"{flops[0] / dense_ms / 1e6:>15.0f}{flops[1] / pruned_ms / 1e6:>8.0f}")
            total_dense += count * dense_ms
            total_pruned += count * pruned_ms
    print(f"{'all 16, weighted':<22}{total_dense:>10.3f}{total_pruned:>11.3f}{total_dense / total_pruned:>8.2f}x")


if __name__ == "__main__":
    main()
