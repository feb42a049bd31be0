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


def _linear(m, *names):
    for n in names:
        child = getattr(m, n, None)
        if isinstance(child, torch.nn.Linear):
            return child
    return None


def _hf_heads(m):
    """Hugging Face BERT-style self-attention: query/key/value linears and three attributes.

    Adapters run before the children's own rules, so they read weight shapes, not in/out_features.
    """
    q = _linear(m, "query")
    if q is None or not all(hasattr(m, a) for a in ("num_attention_heads", "attention_head_size", "all_head_size")):
        return False
    m.num_attention_heads = q.weight.shape[0] // m.attention_head_size
    m.all_head_size = m.num_attention_heads * m.attention_head_size
    return True


def _timm_heads(m):
    """timm-style Attention: num_heads and head_dim, with a fused qkv linear or q/k/v linears."""
    if not (hasattr(m, "num_heads") and hasattr(m, "head_dim")) or isinstance(m, torch.nn.MultiheadAttention):
        return False
    qkv, q = _linear(m, "qkv"), _linear(m, "q", "q_proj", "query")
    if qkv is not None:
        m.num_heads = qkv.weight.shape[0] // (3 * m.head_dim)
    elif q is not None:
        m.num_heads = q.weight.shape[0] // m.head_dim
    else:
        return False
    return True


# Head-count adapters: each takes a module, updates its head attributes from its (already cut)
# linears and returns True, or returns False when the module is not its kind. Whole heads go, so
# the head size stays and the count follows. Add your own with register_head_adapter().
HEAD_ADAPTERS = [_hf_heads, _timm_heads]


def register_head_adapter(fn):
    """Adds `fn(module) -> bool` in front of the built-in head-count adapters."""
    if not callable(fn):
        raise TypeError(f"register_head_adapter: expected a callable, got {type(fn).__name__}")
    HEAD_ADAPTERS.insert(0, fn)
    return fn


def tied_tensors(model):
    """(tensor, dim, reason) for dims whose module code ties them to the hidden size."""
    out = []
    for name, m in model.named_modules():
        prefix = name + "." if name else ""
        if isinstance(m, torch.nn.MultiheadAttention):
            why = (f"heads of nn.MultiheadAttention '{name}': it computes head_dim = embed_dim // num_heads, so its "
                   "heads can go only with the hidden size. Fix: write the attention with q/k/v linears and a "
                   "num_heads attribute (timm or Hugging Face style) to prune heads")
            weights = ["in_proj_weight"] if m.in_proj_weight is not None else ["q_proj_weight", "k_proj_weight",
                                                                              "v_proj_weight"]
            out += [(prefix + w, 0, why) for w in weights] + [(prefix + "out_proj.weight", 1, why)]
            # embed_dim is checked against the input and fixes the packed q/k/v rows.
            width = (f"embed_dim of nn.MultiheadAttention '{name}' is checked against its input and fixes its "
                     "packed q/k/v rows, so the width around it stays")
            out += [(prefix + w, 1, width) for w in weights] + [(prefix + "out_proj.weight", 0, width)]
        elif hasattr(m, "num_heads") and not hasattr(m, "head_dim") and _linear(m, "qkv") is not None:
            # torchvision Swin: head_dim = C // num_heads, with C the input (hidden) size.
            why = (f"heads of {type(m).__name__} '{name}': it computes the head size as C // num_heads from the "
                   "hidden size, so its heads can go only with the hidden size")
            out += [(prefix + "qkv.weight", 0, why)]
            if _linear(m, "proj") is not None:
                out.append((prefix + "proj.weight", 1, why))
    return out


def update_metadata(model):
    """The Python half of the layer rules: module attributes follow the (already cut) tensors."""
    for m in model.modules():
        for adapter in HEAD_ADAPTERS:
            if adapter(m):
                break
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


def _pruner_options(model, ratio=0.5, importance="l1", reduction="sum", normalize=False, seed=0, ignored=(),
                    global_ranking=False, round_to=1, min_channels=1, max_ratio=1.0, overrides=None, verify=True,
                    prune_hidden=False):
    """The C++ PrunerOptions, as the dict _libprune._Pruner reads (one place for prune, DependencyGraph, Pruner)."""
    return dict(ratio=float(ratio), importance=importance, reduction=reduction, normalize=bool(normalize),
                seed=int(seed), ignored=_ignored_names(model, ignored), global_ranking=bool(global_ranking),
                round_to=int(round_to), min_channels=int(min_channels), max_ratio=float(max_ratio),
                overrides={str(k): float(v) for k, v in (overrides or {}).items()}, verify=bool(verify),
                prune_hidden=bool(prune_hidden))


def _forward(model, example_inputs):
    inputs = _as_tuple(example_inputs)
    return lambda: _flatten(model(*inputs))


def prune(model, example_inputs, ratio=0.5, importance="l1", ignored=(), global_ranking=False, round_to=1,
          optimizer=None, min_channels=1, verify=True, prune_hidden=False):
    """Prunes `model` in place (and `optimizer`'s state with it) and returns the applied Plan.

    The dependency graph is traced in C++ from one forward pass on `example_inputs`. After the
    cut the example forward runs again; if the model's own code breaks (a hard-coded reshape),
    every tensor is rolled back, the offending groups are pinned and the rest is cut.

    Attention heads go whole, and head-count attributes (num_heads, num_attention_heads, ...)
    follow through HEAD_ADAPTERS. The hidden size of a model with attention is kept unless
    `prune_hidden` is set.
    """
    _check_module(model, "prune")
    from . import _adapters
    held, state = _optimizer_view(model, optimizer)
    options = _pruner_options(model, ratio=ratio, importance=importance, ignored=ignored, global_ranking=global_ranking,
                              round_to=round_to, min_channels=min_channels, verify=verify, prune_hidden=prune_hidden)
    plan, pins = _libprune._Pruner(model, _adapters, _forward(model, example_inputs), options).step(held, state)
    plan.verification_pins = list(pins)
    return plan


class DependencyGraph:
    """Groups of coupled channels of `model`, traced from one forward pass on `example_inputs`."""

    def __init__(self, model, example_inputs, prune_hidden=False):
        _check_module(model, "DependencyGraph")
        from . import _adapters
        options = _pruner_options(model, ratio=0.0, prune_hidden=prune_hidden)
        self._graph = _libprune._Pruner(model, _adapters, _forward(model, example_inputs), options).graph()

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


class Pruner:
    """A pruner that lives across steps, for schedules inside a plain PyTorch loop.

    Ratios count against the sizes it first saw, so ``step(ratio=s_t)`` along a Schedule reaches
    the same architecture as one step to the final ratio. Criteria: l1, l2, bn_scale, taylor
    (uses each parameter's current ``.grad``: call it after ``loss.backward()``), fpgm, lamp, random.

        pruner = libprune.Pruner(model, x, importance="taylor", ignored=[model.fc], round_to=8)
        schedule = libprune.Schedule("agp", target=0.5, start_epoch=1, end_epoch=4)
        for epoch in range(epochs):
            if schedule.prunes_at(epoch):
                pruner.step(ratio=schedule.ratio_at(epoch), optimizer=opt)
            train_one_epoch(...)
    """

    def __init__(self, model, example_inputs, ratio=0.5, importance="l1", reduction="sum", normalize=False, seed=0,
                 ignored=(), global_ranking=False, round_to=1, min_channels=1, max_ratio=1.0, overrides=None,
                 verify=True, prune_hidden=False):
        _check_module(model, "Pruner")
        from . import _adapters
        self.model = model
        options = _pruner_options(model, ratio=ratio, importance=importance, reduction=reduction, normalize=normalize,
                                  seed=seed, ignored=ignored, global_ranking=global_ranking, round_to=round_to,
                                  min_channels=min_channels, max_ratio=max_ratio, overrides=overrides, verify=verify,
                                  prune_hidden=prune_hidden)
        self._pruner = _libprune._Pruner(model, _adapters, _forward(model, example_inputs), options)
        self._pruner.record_sizes()

    def step(self, ratio=None, optimizer=None):
        """Cuts to `ratio` (or the current one) in place; returns the applied Plan."""
        if ratio is not None:
            self._pruner.set_ratio(float(ratio))
        held, state = _optimizer_view(self.model, optimizer)
        plan, pins = self._pruner.step(held, state)
        plan.verification_pins = list(pins)
        return plan

    @property
    def history(self):
        """Every applied Plan, in order (replay them with apply_plan to rebuild the architecture)."""
        return list(self._pruner.history)

    def graph(self):
        return self._pruner.graph()


def run_recipe(path, overrides=None, resume=False, quiet=False):
    """Runs a recipe (configs/*.json) with the C++ runner and returns its summary as a dict.

    `overrides` maps dotted keys to values, like the runner's ``--set``:
    ``run_recipe("configs/x.json", {"training.epochs": 2, "output_dir": "runs/y"})``.
    """
    import json
    sets = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in (overrides or {}).items()]
    completed, summary, output_dir = _libprune._run_recipe(str(path), sets, bool(resume), not quiet)
    if not completed:
        raise KeyboardInterrupt(f"run_recipe stopped early; the last checkpoint in {output_dir} is loadable: "
                                "call again with resume=True")
    return json.loads(summary)
