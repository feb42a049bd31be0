#!/usr/bin/env python3
"""kill -9 at random points of a libprune-run, then --resume: does it end where an unbroken run ends?

A small recipe on synthetic data (cifar_resnet20, 4 epochs, an AGP schedule cutting at fractional
epochs, checkpoints each epoch) runs once unbroken. Then, for each kill point, a fresh run is killed
with SIGKILL and resumed with --resume: at a random time past start-up (mid-epoch, mid-cut, in the
report), or while its n-th checkpoint file is being written (its temp file exists). Its final
checkpoint (every weight, buffer and optimizer state tensor) must equal the unbroken run's bit for
bit. Prints one line per point and the count.

  /usr/bin/python3 scripts/crash_resume.py [--points 20] [--seed 0] [--binary build/libprune-run]
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import torch

RECIPE = {
    "name": "crash", "model": {"name": "cifar_resnet20"},
    "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 1024, "limit_eval": 64},
    "training": {"epochs": 4, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                 "progress": False, "threads": 1},
    "pruning": [{"importance": "l2", "schedule": {"kind": "agp", "start_epoch": 0.5, "end_epoch": 2.5, "steps": 3},
                 "ratio": 0.5, "ignored_layers": ["fc"], "round_to": 8}],
    "report": {"latency_runs": 1, "latency_warmup": 0, "latency_batches": [1]},
}


def tensors(path):
    return {k: v.clone() for k, v in torch.jit.load(path).state_dict().items()}


def checkpoint_epoch(path):
    """Epochs the checkpoint at `path` holds, or None when there is none."""
    return json.loads(torch.jit.load(path).meta)["epoch"] if os.path.exists(path) else None


def run(binary, recipe, out, resume=False, kill_at=None, kill_on_write=0):
    """Runs to the end, or kills it `kill_at` seconds in, or while it writes its `kill_on_write`-th
    checkpoint file (a temp file appearing); returns 'completed', 'killed ...' or an error text."""
    cmd = [binary, recipe, "--set", f"output_dir={out}"] + (["--resume"] if resume else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start, writes, was_writing = time.monotonic(), 0, False
    while proc.poll() is None:
        writing = bool(kill_on_write) and bool(glob.glob(os.path.join(out, "*.tmp-*")))
        writes += writing and not was_writing
        was_writing = writing
        due = kill_at is not None and time.monotonic() - start >= kill_at
        if due or (writing and writes == kill_on_write):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return f"killed while writing checkpoint file {writes}" if writing else "killed"
        time.sleep(0.0005 if kill_on_write else 0.01)
    err = proc.stderr.read()
    return "completed" if proc.returncode == 0 else f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--binary", default="build/libprune-run")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="libprune_crash_")
    recipe = os.path.join(work, "crash.json")
    with open(recipe, "w") as f:
        json.dump(RECIPE, f)
    t0 = time.monotonic()
    status = run(args.binary, recipe, os.path.join(work, "unbroken"))
    total = time.monotonic() - t0
    if status != "completed":
        sys.exit(f"the unbroken run failed: {status}")
    reference = tensors(os.path.join(work, "unbroken", "last.ckpt"))
    print(f"unbroken run: {total:.1f} s, {len(reference)} tensors in its last checkpoint")
    same = killed = 0
    for i in range(args.points):
        out = os.path.join(work, f"point{i}")
        # Every fourth point: while the n-th checkpoint file is being written (last and best, each
        # epoch); the others at a random time past start-up, drawn again if the run ended first.
        on_write = rng.randint(1, 4) if i % 4 == 3 else 0
        kill_at = None if on_write else rng.uniform(0.3, 0.98) * total
        first = run(args.binary, recipe, out, kill_at=kill_at, kill_on_write=on_write)
        while first == "completed" and kill_at is not None and kill_at > 0.1:
            shutil.rmtree(out, ignore_errors=True)
            kill_at *= 0.8
            first = run(args.binary, recipe, out, kill_at=kill_at)
        resumes, status = 0, first
        held = checkpoint_epoch(os.path.join(out, "last.ckpt"))
        if first.startswith("killed"):
            status = run(args.binary, recipe, out, resume=True)
            resumes = 1
        ckpt = os.path.join(out, "last.ckpt")
        equal = status == "completed" and os.path.exists(ckpt)
        if equal:
            got = tensors(ckpt)
            equal = got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in got)
        same += equal
        killed += first.startswith("killed")
        where = f"at checkpoint write {on_write}" if on_write else f"at {kill_at:.1f} s"
        since = "from scratch" if held is None else f"after epoch {held}"
        print(f"point {i + 1:2d}: kill {where}: {first}; {'resumed ' + since if resumes else 'not resumed'}: {status}; "
              f"final tensors {'equal' if equal else 'DIFFER'}")
        shutil.rmtree(out, ignore_errors=True)
    print(f"{same} of {args.points} points ({killed} killed) ended with the unbroken run's final tensors, bit for bit")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if same == killed == args.points else 1


if __name__ == "__main__":
    sys.exit(main())
