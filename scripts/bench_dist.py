#!/usr/bin/env python3
"""Data-parallel cost on this machine: for 1 and 2 processes, the time per training step split into
compute and the wait for the gradient all-reduce after backward, and the gradient bytes each rank
reduces per step before and after a 50% cut.

Runs the default recipe (CIFAR ResNet-20 on Fashion-MNIST, global batch 128) shortened to two
epochs of --batches batches: epoch 0 dense, a one-shot 50% L2 cut, epoch 1 pruned. One process uses
every core; 2 processes (libprune-run --nproc-per-node 2, Gloo on loopback) one thread each. Repeats
alternate the two and print the median and the range of each figure.

    /usr/bin/python3 scripts/bench_dist.py [--repeats 3] [--batches 60]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(nproc, batches, out):
    cmd = [os.path.join(ROOT, "build", "libprune-run"), os.path.join(ROOT, "configs", "fashion_mnist_resnet20_filters50.json"),
           "--set", f"output_dir={out}", "--set", "training.epochs=2", "--set", f"training.max_batches={batches}",
           "--set", "training.lr_schedule.restarts=[]", "--set", "training.progress=false", "--set", "data.limit_eval=512",
           "--set", "pruning.0.schedule.kind=one_shot", "--set", "pruning.0.schedule.start_epoch=1",
           "--set", "report.latency_runs=1"]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        epochs = [r for r in map(json.loads, f) if r["type"] == "epoch"]
    return [(r["step_ms"], r.get("allreduce_wait_ms", 0.0), r.get("bytes_reduced_per_step", 0)) for r in epochs]


def spread(values, fmt="%.1f"):
    return (fmt + " (" + fmt + "-" + fmt + ")") % (statistics.median(values), min(values), max(values))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, default=60)
    args = ap.parse_args()
    results = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for nproc in (1, 2):
                results[nproc].append(run(nproc, args.batches, os.path.join(tmp, f"{nproc}_{i}")))
    print(f"{args.batches} steps per epoch, global batch 128, {args.repeats} runs each: median (min-max)")
    print("processes  epoch            step ms             compute ms          all-reduce wait ms   MB reduced/step")
    for nproc, runs in results.items():
        for epoch, label in ((0, "0 dense"), (1, "1 pruned")):
            step = [r[epoch][0] for r in runs]
            wait = [r[epoch][1] for r in runs]
            compute = [s - w for s, w in zip(step, wait)]
            mb = runs[0][epoch][2] / 1e6
            print(f"{nproc:<10} {label:<16} {spread(step):<19} {spread(compute):<19} {spread(wait):<20} {mb:.3f}")
    before, after = results[2][0][0][2], results[2][0][1][2]
    if before:
        print(f"the cut reduces the all-reduce traffic {before / after:.2f}x ({before} -> {after} bytes per step)")
    one = statistics.median(r[0][0] for r in results[1])
    two = statistics.median(r[0][0] for r in results[2])
    print(f"dense step, 2 processes against 1: {one / two:.2f}x the speed (>1: faster)")


if __name__ == "__main__":
    main()
