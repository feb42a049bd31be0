"""libprune: structural pruning on LibTorch.

The engine is C++; this package holds its bindings and the thin adapters that only Python can
do (calling an nn.Module, flattening its outputs, eval mode on its submodules).
"""
import torch  # noqa: F401  (loads LibTorch and torch's tensor casters before the extension)

from ._libprune import __version__, model_names, zoo_state_shapes, OpCount, LayerOps, Plan, Group, Schedule
from ._libprune import retain_freed_memory
from ._adapters import count_ops, prune, apply_plan, DependencyGraph, register_head_adapter, Pruner, run_recipe

__all__ = ["__version__", "model_names", "zoo_state_shapes", "count_ops", "prune", "apply_plan",
           "DependencyGraph", "register_head_adapter", "Pruner", "Schedule", "run_recipe", "Plan", "Group", "OpCount", "LayerOps",
           "retain_freed_memory"]
