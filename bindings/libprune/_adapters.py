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
    restore = enter_eval(model)
    try:
        yield model
    finally:
        restore()


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


def enter_eval(model):
    """Eval mode for every submodule; returns the callable that restores each one's flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()

    def restore():
        for m, flag in flags:
            m.training = flag
    return restore


_CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_CONV_T = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
_NORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
         torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)


def update_metadata(model):
    """The Python half of the layer rules: module attributes follow the (already cut) tensors."""
    for m in model.modules():
        if isinstance(m, _CONV + _CONV_T):
            w = m.weight
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            if depthwise:
                m.groups = w.shape[0]
            if isinstance(m, _CONV_T):
                m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
            else:
                m.out_channels, m.in_channels = w.shape[0], w.shape[1] * m.groups
        elif isinstance(m, _NORM):
            t = m.running_mean if m.running_mean is not None else m.weight
            if t is not None:
                m.num_features = t.shape[0]
        elif isinstance(m, torch.nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, torch.nn.LayerNorm):
            if m.weight is not None and len(m.normalized_shape) == 1:
                m.normalized_shape = (m.weight.shape[0],)
        elif isinstance(m, torch.nn.GroupNorm):
            if m.weight is not None:
                m.num_channels = m.weight.shape[0]
        elif isinstance(m, torch.nn.Embedding):
            m.embedding_dim = m.weight.shape[1]
        elif isinstance(m, torch.nn.PReLU):
            m.num_parameters = m.weight.shape[0]


def _optimizer_view(model, optimizer):
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


def _ignored_names(model, ignored):
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for m in ignored or ():
        if isinstance(m, str):
            out.append(m)
        elif id(m) in names and names[id(m)]:
            out.append(names[id(m)])
        else:
            raise ValueError(f"ignored module {type(m).__name__} is not in the model; "
                             "fix: pass submodules of the model being pruned, e.g. ignored=[model.fc]")
    return out


def _forward(model, example_inputs):
    inputs = _as_tuple(example_inputs)
    return lambda: _flatten(model(*inputs))


def prune(model, example_inputs, ratio=0.5, importance="l1", ignored=(), global_ranking=False, round_to=1,
          optimizer=None, min_channels=1, verify=True):
    """Prunes `model` in place (and `optimizer`'s state with it) and returns the applied Plan.

    The dependency graph is traced in C++ from one forward pass on `example_inputs`. After the
    cut the example forward runs again; if the model's own code breaks (a hard-coded reshape),
    every tensor is rolled back, the offending groups are pinned and the rest is cut.
    """
    _check_module(model, "prune")
    from . import _adapters
    held, state = _optimizer_view(model, optimizer)
    plan, pins = _libprune._prune(model, _adapters, _forward(model, example_inputs), float(ratio), importance,
                                  bool(global_ranking), _ignored_names(model, ignored), int(round_to),
                                  int(min_channels), bool(verify), held, state)
    plan.verification_pins = list(pins)
    return plan


class DependencyGraph:
    """Groups of coupled channels of `model`, traced from one forward pass on `example_inputs`."""

    def __init__(self, model, example_inputs):
        _check_module(model, "DependencyGraph")
        from . import _adapters
        self._graph = _libprune._graph(model, _adapters, _forward(model, example_inputs))

    @property
    def groups(self):
        return self._graph.groups

    def explain(self):
        return self._graph.explain()

    def __repr__(self):
        return self.explain().splitlines()[0]


def apply_plan(model, example_inputs, plan, optimizer=None):
    """Replays a recorded plan on `model` (all or nothing), then checks the example forward."""
    _check_module(model, "apply_plan")
    from . import _adapters
    held, state = _optimizer_view(model, optimizer)
    _libprune._apply_plan(model, _adapters, plan, held, state)
    with eval_mode(model), torch.no_grad():
        _flatten(model(*_as_tuple(example_inputs)))
    return model
