"""libprune: structural pruning on LibTorch.

The engine is C++; this package holds its bindings and the thin adapters only Python can do
(calling an nn.Module, reading and writing its attributes).
"""
import torch  # noqa: F401  (loads LibTorch and torch's tensor casters before the extension)

from ._libprune import (__version__, model_names, OpCount, LayerOps, Plan, Group, ExactReport, Schedule,
                        ScheduleOptions, PrunerOptions, LatencyTable, retain_freed_memory, importance_criteria, ruled_ops)
from ._api import (count_ops, prune, apply_plan, remove_units, check_plan, DependencyGraph, Pruner, run_recipe, latency_table, sensitivity,
                   register_importance, unregister_importance, register_op_rule)
from ._layers import register_head_adapter
from ._model import eval_mode
from . import quantize, attention
from .attention import split_attention, merge_attention

__all__ = ["__version__", "model_names", "count_ops", "prune", "apply_plan", "remove_units", "check_plan", "DependencyGraph",
           "Pruner", "PrunerOptions", "Schedule", "ScheduleOptions", "run_recipe", "Plan", "Group", "ExactReport",
           "OpCount", "LayerOps", "retain_freed_memory", "register_importance", "unregister_importance",
           "importance_criteria", "register_op_rule", "ruled_ops", "register_head_adapter", "eval_mode", "quantize",
           "latency_table", "LatencyTable", "sensitivity", "attention", "split_attention", "merge_attention"]
