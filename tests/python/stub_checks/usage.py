"""Typical libprune use, type-checked against libprune/__init__.pyi (test_stubs.py)."""
import torch

import libprune


def main() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    macs, params = libprune.count_ops(model, x)
    plan: libprune.Plan = libprune.prune(model, x, ratio=0.5, importance="l2", ignored_layers=["0"], round_to=8)
    cuts = [(name, dim, len(keep)) for name, dim, size, keep in plan.cuts]
    options = libprune.PrunerOptions(ratio=0.3, global_pruning=True)
    ratio: float = options.ratio
    schedule = libprune.Schedule("agp", ratio=0.5, start_epoch=1, end_epoch=4)
    due = schedule.steps_between(1.0, 2.0)
    pruner = libprune.Pruner(model, x, importance="taylor", max_ratio=0.9)
    history = pruner.history
    libprune.register_importance("mine", lambda group, tensors: [0.0] * group.size)
    summary = libprune.run_recipe("configs/x.json", {"training.epochs": 1}, quiet=True)
    print(macs, params, cuts, ratio, due, history, summary)
