"""The int8 deploy file of a Python model converted by libprune.quantize.convert: written by
save_int8, read back into a float model of the same architecture by load_int8.

The file is a dict of tensors (torch.save), in the format C++ writes for its kernels
(quant::int8_state_dict): per unit "<layer>.int8.weight" (int8), ".weight_scale" (per output
channel), ".bias" (float, batch norm folded), ".qparams" (float64: output scale and zero point, 0 and 0
for an output left in float, 1, input scale and zero point), plus the float tensors of everything
the int8 units do not replace.
"""
import torch

from . import _model
from . import quantize as _q
from ._placement import _calls, _units


def _replaced(model, state):
    """state_dict keys the int8 units replace: their layers' weight and bias, their fused batch norms'."""
    modules, out = dict(model.named_modules()), set()
    for layer, norm, _, _, _ in state["units"]:
        if _q._unit_reason(modules[layer]):
            continue
        for name in (layer, norm):
            if name:
                out.update(f"{name}.{k}" for k, _ in modules[name].state_dict().items())
    return out


def save_int8(model: torch.nn.Module, path: str) -> None:
    """Writes a converted model's deploy file: every int8 weight, scale, bias and quantization
    parameter, and the float tensors of the layers left in float."""
    state = getattr(model, "_libprune_qat", None)
    if state is None or not state.get("converted"):
        raise ValueError("save_int8: the model is not converted to int8. Fix: prepare_qat, calibrate or train, "
                         "then libprune.quantize.convert(model)")
    replaced = _replaced(model, state)
    out = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in replaced}
    for name, m in model.named_modules():
        for k, v in getattr(m, "_int8_deploy", {}).items():
            out[f"{name}.int8.{k}"] = v.detach().clone()
    torch.save(out, path)


def _unprepare(model):
    """Takes prepare_qat's quantisers, forwards and hooks off again (a forward set on a layer before
    prepare_qat comes back)."""
    state = model._libprune_qat
    for h in state["hooks"]:
        h.remove()
    modules = dict(model.named_modules())
    for layer, original in state["forwards"].items():
        modules[layer].__dict__.pop("forward", None)
        if original is not None:
            modules[layer].forward = original
    for name, _ in _q.quantisers(model):
        owner, _, attr = name.rpartition(".")
        delattr(modules[owner] if owner else model, attr)
    del model._libprune_qat


def _plans(model, state, sd, path):
    """The int8 unit plans from the file, and the float tensors it holds for the rest; raises on a misfit."""
    modules, plans, used = dict(model.named_modules()), [], set()
    for layer, norm, relu, _, _ in state["units"]:
        m = modules[layer]
        if _q._unit_reason(m):
            plans.append((m, [], None, None, None))
            continue
        p = f"{layer}.int8."
        missing = [p + k for k in ("weight", "weight_scale", "qparams") if p + k not in sd]
        if missing:
            raise ValueError(f"load_int8({path}): {missing[0]} is missing. Fix: load the file into the "
                             "architecture it was saved from (pruned by the same plans)")
        w, s, q = sd[p + "weight"], sd[p + "weight_scale"], sd[p + "qparams"]
        if w.shape != m.weight.shape or w.dtype != torch.int8:
            raise ValueError(f"load_int8({path}): {p}weight is {w.dtype} {tuple(w.shape)} where {layer} has weight "
                             f"{tuple(m.weight.shape)}. Fix: load the file into the architecture it was saved from")
        qweight = torch._make_per_channel_quantized_tensor(w, s.double(), torch.zeros(len(s), dtype=torch.long), 0)
        out_q = None if float(q[0]) == 0 else (float(q[0]), int(q[1]))
        fused = [modules[n] for n in (norm, relu) if n]
        plans.append(_q._unit_plan(m, fused, qweight, sd.get(p + "bias"), relu, (float(q[3]), int(q[4])), out_q))
        used.update(k for k in sd if k.startswith(p))
    rest = {k: v for k, v in sd.items() if k not in used}
    expected = {k: v for k, v in model.state_dict().items() if k not in _replaced(model, state) and "fake_quant" not in k}
    misfit = sorted(set(rest) ^ set(expected)) or [k for k in rest if rest[k].shape != expected[k].shape]
    if misfit:
        raise ValueError(f"load_int8({path}): {misfit[0]} does not fit the model ({len(misfit)} tensor(s)). Fix: "
                         "load the file into the architecture it was saved from (pruned by the same plans)")
    return plans, rest


def load_int8(model: torch.nn.Module, example_inputs, path: str, engine: str = "onednn") -> list:
    """Turns a float model built as the converted one was (its float weights do not matter) into the
    int8 model save_int8 wrote: placement from one pass on `example_inputs`, then every int8 tensor
    from the file; a unit the file has no int8 kernel for was kept float (keep_float) and stays float.
    Returns the units. Raises, leaving the model as it was, when it does not fit."""
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"load_int8: engine {engine!r} is not built into this torch. Fix: \"onednn\" or \"qnnpack\"")
    sd = torch.load(path, weights_only=True)
    modules = dict(model.named_modules())
    probe = [u[0] for u in _units(_calls(model, example_inputs)[0]) if not _q._unit_reason(modules[u[0]])]
    kept = [layer for layer in probe if f"{layer}.int8.qparams" not in sd]  # kept float when it was converted
    if probe and len(kept) == len(probe):
        raise ValueError(f"load_int8({path}): the file holds no int8 kernel of this model's {len(probe)} units (first: "
                         f"{kept[0]}.int8.qparams is missing). Fix: load the file save_int8 wrote for this architecture "
                         "(pruned by the same plans)")
    units = _q.prepare_qat(model, example_inputs, keep_float=kept)
    try:
        plans, rest = _plans(model, model._libprune_qat, sd, path)
    except Exception:
        _unprepare(model)
        raise
    torch.backends.quantized.engine = engine
    with torch.no_grad():
        live = model.state_dict()
        for k, v in rest.items():
            live[k].copy_(v)
    _q._install(model, model._libprune_qat, plans)
    return units
