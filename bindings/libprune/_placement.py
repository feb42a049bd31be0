"""Where prepare_qat puts quantisers: the units of one recorded forward pass (Python's twin of the C++
core's placement), and the units mixed precision keeps float."""
import torch

from . import _model

_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
_ACTIVATIONS = (torch.nn.ReLU, torch.nn.ReLU6)


def _calls(model, example_inputs):
    """(name, module, names of the calls it read from) of every leaf module call, in order, and the
    names of the calls whose output the model returns. A call that returns its input (an in-place
    ReLU) becomes that tensor's producer for later readers."""
    calls, hooks, producer, keep = [], [], {}, []
    for name, m in model.named_modules():
        if next(m.children(), None) is None and m is not model:
            def record(mod, inputs, output, name=name):
                tensors = [t for t in inputs if isinstance(t, torch.Tensor)]
                calls.append((name, mod, [producer[id(t)] for t in tensors if id(t) in producer]))
                if isinstance(output, torch.Tensor):
                    producer[id(output)] = name
                    keep.append(output)  # alive for the pass, so no id is reused
            hooks.append(m.register_forward_hook(record))
    try:
        with _model.eval_mode(model), torch.no_grad():
            outputs = _model.forward(model, example_inputs)()
    finally:
        for h in hooks:
            h.remove()
    return calls, {producer[id(t)] for t in outputs if id(t) in producer}


def _units(calls):
    """conv/linear (-> batch norm) (-> ReLU), each layer called once: [(layer, norm, relu, end, sources)],
    names (norm and relu None when absent; end the last of them), sources: the calls the layer read."""
    readers, uses, modules = {}, {}, {}
    for name, m, sources in calls:
        uses[name] = uses.get(name, 0) + 1
        modules[name] = m
        for src in sources:
            readers.setdefault(src, []).append(name)
    units = []
    for name, m, sources in calls:
        if not isinstance(m, _WEIGHTED) or uses[name] != 1:
            continue
        end, found = name, []
        for kinds in (_NORMS, _ACTIVATIONS):
            nxt = readers.get(end, [])
            if len(nxt) == 1 and isinstance(modules[nxt[0]], kinds) and uses[nxt[0]] == 1:
                end = nxt[0]
                found.append(end)
            else:
                found.append(None)
        units.append((name, found[0], found[1], end, sources))
    return units


def _unit_reason(m):
    if isinstance(m, torch.nn.Linear):
        return None
    if not isinstance(m, torch.nn.Conv2d):
        return f"{type(m).__name__} has no int8 kernel here (Conv2d and Linear do)"
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return f"padding {m.padding!r} / padding_mode {m.padding_mode!r}: the int8 conv takes zero padding by numbers"
    return None


def _keep_float(units, names, modules):
    """(units to quantise, lines of the units kept float): a unit stays float when keep_float names any of
    its layers. Raises, naming it, for a name that is no unit's layer, or when no unit is left."""
    names = list(names)
    kept = [u for u in units if any(n in names for n in u[:3] if n)]
    found = {n for u in kept for n in u[:3] if n}
    for name in names:
        if name not in found:
            some = ", ".join(u[0] for u in units[:6]) + (", ..." if len(units) > 6 else "")
            raise ValueError(f"prepare_qat: keep_float names {name!r}, which is no layer of a unit that would be "
                             f"quantised ({len(units)} units: {some or 'none'}). Fix: name a unit's conv or linear, "
                             "batch norm or ReLU")
    convertible = [u for u in units if not _unit_reason(modules[u[0]])]  # the others stay float anyway
    if kept and all(u in kept for u in convertible):
        raise ValueError(f"prepare_qat: keep_float keeps all {len(convertible)} units float, so nothing would be quantised. "
                         "Fix: keep fewer (the most sensitive few, from libprune.quantize.sensitivity)")
    lines = [" + ".join(n for n in u[:3] if n) + ": kept in float by keep_float (mixed precision)" for u in kept]
    return [u for u in units if u not in kept], lines
