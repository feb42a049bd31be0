"""Model access: the few things only Python can do with an nn.Module (call it, flatten its outputs,
name its submodules) and the optimizer's state as the C++ surgery reads it."""
import contextlib

import torch

from . import _libprune


def as_tuple(example_inputs):
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a tuple/list of tensors, got {type(example_inputs).__name__}; "
        "fix: pass e.g. torch.randn(1, 3, 224, 224)")


def flatten(out):
    """Every tensor in a forward's output (tensor, tuple, list, dict, or ModelOutput-like)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten(v)]
    return []


def forward(model, example_inputs):
    """The model's forward on the example inputs, as the list of tensors the C++ trace reads."""
    inputs = as_tuple(example_inputs)
    return lambda: flatten(model(*inputs))


def describe(example_inputs):
    return _libprune._describe_inputs([t for t in as_tuple(example_inputs) if isinstance(t, torch.Tensor)])


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() for the block, then every submodule's own train flag back (the C++ rule)."""
    restore = _libprune._eval_scope(model)
    try:
        yield model
    finally:
        restore()


def check_module(model, fn):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")


def module_names(model, modules):
    """Names of `modules` (submodules of `model`, or names already) in the model."""
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for m in modules or ():
        if isinstance(m, str):
            out.append(m)
        elif id(m) in names and names[id(m)]:
            out.append(names[id(m)])
        else:
            raise ValueError(f"ignored_layers: module {type(m).__name__} is not in the model; fix: pass submodules of the "
                             "model being pruned, e.g. ignored_layers=[model.fc]")
    return out


def optimizer_view(model, optimizer):
    """(held parameters, {name: state tensors shaped like the parameter}) for a torch.optim optimizer."""
    if optimizer is None:
        return None, None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    held = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for name, p in model.named_parameters():
        entry = optimizer.state.get(p, {})
        state[name] = [v for v in entry.values() if torch.is_tensor(v) and v.shape == p.shape]
    return held, state
