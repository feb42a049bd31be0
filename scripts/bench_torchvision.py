#!/usr/bin/env python3
"""Prunes every torchvision 0.14 classification model by 50% through the Python API.

For each lowercase builder in torchvision.models (80, without get_*/list_models): random weights,
eval mode, norms with non-trivial statistics and no near-zero parameter (tests/python/model_fixtures.py),
input 1x3x224x224, ratio 0.5 with the 1000-way classifier ignored. A model passes when
  - the forward runs after pruning, with the same output shape and fewer MACs,
  - every Conv2d and Linear outside a pinned group keeps about half its output channels
    (ceil(n/2), or within 5% of n/2), and
  - the pruned model is exact (libprune.check_plan against a copy taken before: worst difference
    from the dense model with the cut channels zeroed <= 1e-4 of the output scale; groups a norm
    normalises across are counted and checked for shapes only).
A model that passes with most of its layers pinned says so ("yes, mostly pinned"): its MACs ratio
and the pinned share of its layers are in the table.
Each model runs in its own process (peak memory is measured per model). Prints a markdown table
and the count; `--out FILE` also writes them.

  PYTHONPATH=build/python /usr/bin/python3 scripts/bench_torchvision.py [--models a,b] [--out docs/torchvision_sweep.md]
"""
import argparse
import copy
import re
import inspect
import json
import math
import multiprocessing as mp
import os
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
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
    from model_fixtures import randomise
    torch.manual_seed(0)
    result = {"model": name}
    try:
        model = getattr(torchvision.models, name)().eval()
        randomise(model)  # norms with statistics, no zero-initialised head: differences can show
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
        dense = copy.deepcopy(model)
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
        exact = libprune.check_plan(dense, model, plan, x)
        cut_layers = [n for n in layers if n + ".weight" in traced and not any(layers[n] is c for c in classifier)]
        pinned_share = sum(n + ".weight" in pinned for n in cut_layers) / max(1, len(cut_layers))
        result.update(
            ok=new_shape == out_shape and macs1 < macs0 and not off and exact.exact,
            exact_worst=exact.worst, normalised=len(exact.normalised), exact_problem=exact.problem,
            pinned_share=pinned_share,
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
    args = ap.parse_args()
    rows = []
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
    lines = ["| model | ok | MACs after/before | params after/before | pinned groups | pinned layers | exact: worst "
             "difference (normalised groups) | prune s | extra memory / model size | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {n: i for i, n in enumerate(builders())}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | no | | | | | | | | {r['error']} |")
            continue
        notes = "; ".join(r["pins"]) if r["pins"] else ""
        if r["n_off"]:
            notes += f"; {r['n_off']} layers off 50%: {', '.join(r['off'])}"
        if r["exact_problem"]:
            notes += f"; not exact: {r['exact_problem']}"
        ok = ("yes, mostly pinned" if r["pinned_share"] > 0.5 else "yes") if r["ok"] else "no"
        lines.append(f"| {r['model']} | {ok} | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
                     f"{r['pinned_groups']}/{r['groups']} | {100 * r['pinned_share']:.0f}% | {r['exact_worst']:.1e} "
                     f"({r['normalised']}) | {r['seconds']:.2f} | {r['memory_x']:.2f} | {notes} |")
    passed = sum(1 for r in rows if r.get("ok"))
    mostly = sum(1 for r in rows if r.get("ok") and r["pinned_share"] > 0.5)
    inexact = sum(1 for r in rows if "exact_worst" in r and r["exact_worst"] > 1e-4)
    worst = max((r["exact_worst"] for r in rows if "exact_worst" in r), default=0.0)
    lines.append("")
    lines.append(f"{passed} of {len(rows)} models pass ({mostly} of them with most layers pinned); {inexact} not exact; "
                 f"worst difference over all models {worst:.1e} of the output scale.")
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
