#!/usr/bin/env python3
"""C++ against Python: one SGD training step of the same model, same threads, batch and layout.

The C++ step runs entirely in LibTorch C++ (libprune's zoo model through the bindings, GIL
released); the Python step is torchvision's model of the same architecture in a plain PyTorch
loop. Both are timed in this process, alternating, and the ratio is printed (>= 1 means the C++
step is at least as fast).

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_train_step.py [--model resnet18] [--batch 32]
"""
import argparse
import os
import statistics
import time

import torch
import torchvision

import libprune
from libprune import _libprune_dev


def python_step_seconds(name, classes, batch, size, steps, channels_last):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=classes)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(classes, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    times = []
    for s in range(steps + 2):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if s >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    ap.add_argument("--return-freed-memory", action="store_true",
                    help="leave glibc's malloc at its defaults (freed activations go back to the OS every step)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    # Process-wide, so both steps run under the same allocator settings.
    retained = not a.return_freed_memory and libprune.retain_freed_memory()
    cl = not a.nchw
    cpp, py = [], []
    for _ in range(a.rounds):
        cpp.append(_libprune_dev.train_step_seconds(a.model, 10, a.batch, a.size, a.steps, cl))
        py.append(python_step_seconds(a.model, 10, a.batch, a.size, a.steps, cl))
    c, p = statistics.median(cpp), statistics.median(py)
    print(f"{a.model}, batch {a.batch}, {a.size}x{a.size}, {'channels_last' if cl else 'NCHW'}, "
          f"{torch.get_num_threads()} threads, freed memory {'retained' if retained else 'returned to the OS'}, "
          f"libprune {libprune.__version__}")
    print(f"C++ step    {c * 1e3:8.1f} ms (median of {a.rounds} rounds x {a.steps} steps)")
    print(f"Python step {p * 1e3:8.1f} ms")
    print(f"Python / C++ = {p / c:.3f} (>= 1: the C++ step is at least as fast)")


if __name__ == "__main__":
    main()
