"""Python-side adapters: the few things the C++ core cannot do on a Python nn.Module."""
import contextlib

import torch

from . import _libprune


def _as_tuple(example_inputs):
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a tuple/list of tensors, got {type(example_inputs).__name__}; "
        "fix: pass e.g. torch.randn(1, 3, 224, 224)")


def _flatten(out):
    """Every tensor in a forward's output (tensor, tuple, list, dict, or ModelOutput-like)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _flatten(v)]
    return []


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() for the block, then every submodule's own train flag back."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _check_module(model, fn):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")


def count_ops(model, example_inputs):
    """Parameters and MACs of one forward pass of any nn.Module, traced in C++ from autograd.

    Returns an OpCount that unpacks as ``(macs, params)`` and also carries ``matmul_macs``,
    ``norm_elements``, ``pool_elements``, ``elementwise_elements`` and per-layer ``layers``.
    The model runs once in eval mode; its train flags and parameters are left as they were.
    """
    _check_module(model, "count_ops")
    inputs = _as_tuple(example_inputs)
    params = list(model.named_parameters())
    with eval_mode(model):
        return _libprune._count_ops(lambda: _flatten(model(*inputs)), params,
                                    _libprune._describe_inputs([t for t in inputs if isinstance(t, torch.Tensor)]))
