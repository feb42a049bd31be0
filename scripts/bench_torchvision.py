#!/usr/bin/env python3
"""Prunes every torchvision 0.14 classification model by 50% through the Python API.

For each lowercase builder in torchvision.models (80, without get_*/list_models): random weights,
eval mode, input 1x3x224x224, ratio 0.5 with the 1000-way classifier ignored. A model passes when
  - the forward runs after pruning, with the same output shape and fewer MACs, and
  - every Conv2d and Linear outside a pinned group keeps about half its output channels
    (ceil(n/2), or within 5% of n/2).
Each model runs in its own process (peak memory is measured per model). Prints a markdown table
and the count; `--out FILE` also writes them.

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_torchvision.py [--models a,b] [--out docs/torchvision_sweep.md]
"""
import argparse
import re
import inspect
import json
import math
import multiprocessing as mp
import resource
import sys
import time


def builders():
    import torchvision.models as M
    return [n for n in dir(M) if n[0].islower() and inspect.isfunction(getattr(M, n))
            and not n.startswith("get_") and n != "list_models"]


def run_one(name, queue):
    import torch
    import torchvision
    import libprune
    torch.manual_seed(0)
    result = {"model": name}
    try:
        model = getattr(torchvision.models, name)().eval()
        x = torch.randn(1, 3, 224, 224)
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        with torch.no_grad():
            out_shape = tuple(model(x).shape)
        macs0, params0 = libprune.count_ops(model, x)
        classifier = [m for m in model.modules()
                      if (isinstance(m, torch.nn.Linear) and m.out_features == 1000)
                      or (isinstance(m, torch.nn.Conv2d) and m.out_channels == 1000)]
        graph = libprune.DependencyGraph(model, x)
        pinned = {t for g in graph.groups if g.pinned for t, d in g.members if d == 0}
        # Layers the eval forward never runs (googlenet's aux heads) are in no group and stay.
        traced = {t for g in graph.groups for t, d in g.members if d == 0}
        layers = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
        before = {n: m.weight.shape[0] for n, m in layers.items()}
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        plan = libprune.prune(model, x, ratio=0.5, ignored_layers=classifier)
        # Groups the verification pass pinned (the model's own code broke when they were cut).
        verified_pins = {p.split(":")[0] for p in plan.verification_pins}
        pinned |= {t for g in graph.groups if g.name in verified_pins for t, d in g.members if d == 0}
        result["seconds"] = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with torch.no_grad():
            new_shape = tuple(model(x).shape)
        macs1, params1 = libprune.count_ops(model, x)
        off = []
        for n, m in layers.items():
            if n + ".weight" in pinned or n + ".weight" not in traced or any(m is c for c in classifier):
                continue
            old, new = before[n], m.weight.shape[0]
            if not (new == math.ceil(old / 2) or abs(new - old / 2) <= max(1, 0.05 * old)):
                off.append(f"{n}:{old}->{new}")
        result.update(
            ok=new_shape == out_shape and macs1 < macs0 and not off,
            macs_ratio=macs1 / macs0, params_ratio=params1 / params0,
            groups=len(graph.groups), pinned_groups=sum(g.pinned for g in graph.groups),
            pins=sorted({re.sub(r" '[^']*'", "", g.reason.split(":")[0]) for g in graph.groups if g.pinned}),
            verification_pins=len(plan.verification_pins), off=off[:3], n_off=len(off),
            memory_x=max(0, rss1 - rss0) / max(1, param_bytes))
    except Exception as e:  # noqa: BLE001  (the table reports every failure)
        result.update(ok=False, error=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    queue.put(result)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--from-log", default="",
                    help="build the table from the JSON lines an earlier run printed; models listed in "
                         "--models are run again and replace their lines")
    args = ap.parse_args()
    rows = []
    if args.from_log:
        with open(args.from_log, errors="replace") as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        names = args.models.split(",") if args.models else []
        rows = [r for r in rows if r["model"] not in names]
    else:
        names = args.models.split(",") if args.models else builders()
    ctx = mp.get_context("spawn")
    for name in names:
        q = ctx.Queue()
        p = ctx.Process(target=run_one, args=(name, q))
        p.start()
        p.join(args.timeout)
        if p.is_alive():
            p.kill()
            rows.append({"model": name, "ok": False, "error": f"timeout after {args.timeout} s"})
        else:
            rows.append(q.get() if not q.empty() else {"model": name, "ok": False, "error": f"exit code {p.exitcode}"})
        r = rows[-1]
        print(json.dumps(r), flush=True)
    lines = ["| model | ok | MACs after/before | params after/before | pinned groups | prune s | extra memory / model size | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {n: i for i, n in enumerate(builders())}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | no | | | | | | {r['error']} |")
            continue
        notes = "; ".join(r["pins"]) if r["pins"] else ""
        if r["n_off"]:
            notes += f"; {r['n_off']} layers off 50%: {', '.join(r['off'])}"
        lines.append(f"| {r['model']} | {'yes' if r['ok'] else 'no'} | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
                     f"{r['pinned_groups']}/{r['groups']} | {r['seconds']:.2f} | {r['memory_x']:.2f} | {notes} |")
    passed = sum(1 for r in rows if r.get("ok"))
    lines.append("")
    lines.append(f"{passed} of {len(rows)} models pass.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# torchvision sweep: 50% pruning of every classification model\n\n"
                    "Made by `PYTHONPATH=build/python /usr/bin/python3 scripts/bench_torchvision.py --out "
                    "docs/torchvision_sweep.md` (2-core CPU, Debian torch 1.13 / torchvision 0.14).\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
