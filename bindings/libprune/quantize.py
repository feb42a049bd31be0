"""Quantization-aware training (QAT) and calibration for Python nn.Modules, on libprune's C++ core.

    import libprune.quantize as lq
    report = lq.prepare_qat(model, example_inputs)   # fake quantisers; names and parameters unchanged
    ... train as usual: torch.optim holds the same parameters, state_dict() holds the quantisers' state
    lq.calibration_mode(model); run a few batches     # post-training: the observers only watch

The rounding, the observers and the quantization parameters are the C++ core's (the math of the C++
models' quantisers, and of torch.ao's FusedMovingAvgObsFakeQuantize bit for bit). Placement comes
from one forward pass, as in C++: conv or linear (-> batch norm) (-> ReLU) is a unit whose weight is
rounded per output channel and whose output is rounded once, after the ReLU. Parameter names do not
change (torch.ao's FX rewrite renames them, which breaks name-based pruning plans), so a model can be
pruned with libprune after prepare_qat: the per-channel quantiser state is cut with its channels.
convert() then runs each unit on oneDNN's int8 kernels (torch.ops.quantized) with exactly the
scales and zero points training used, the batch norm folded by the C++ core (the fold C++ convert uses).
"""
import types

import torch

from . import _libprune, _model
from ._placement import _calls, _keep_float, _unit_reason, _units



class FakeQuantize(torch.nn.Module):
    """Observes a tensor's range and rounds it to the integer grid that range defines, in float.

    role "weight": signed, symmetric, per output channel (``channels`` of them); role "activation":
    unsigned, affine, per tensor. bits 2 to 8. observer "moving_average" (QAT), "min_max",
    "percentile" (calibration; per batch the (100 - p)-th and p-th percentiles, the widest over the
    batches) or "mse" (calibration; per batch the range [b x min, a x max] whose grid rounds the batch
    with the least squared error, the widest over the batches). The observer watches in training mode only. Its state is buffers with the C++
    quantiser's names: scale, zero_point, min_val, max_val, observer_enabled, fake_quant_enabled,
    quant_range (the integer range, so a state_dict saved with other bits is refused when used).
    learnable: LSQ, ``scale`` is an ``nn.Parameter`` learned once the observer is off (its first value
    is the observed range's), the gradient scaled by 1 / sqrt(numel x qmax).
    """

    def __init__(self, role: str = "activation", channels: int = 1, bits: int = 8, observer: str = "moving_average",
                 averaging_constant: float = 0.01, percentile: float = 99.99, learnable: bool = False) -> None:
        super().__init__()
        opts = _libprune._quant_options(bits=bits, observer=observer, averaging_constant=averaging_constant,
                                        percentile=percentile, learnable_scales=learnable)
        _libprune._integer_range(role, bits)  # the role's check
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"FakeQuantize: channels must be an integer >= 1, got {channels!r}")
        self.role, self.bits, self.learnable = role, opts.bits, opts.learnable_scales
        self.observer, self.averaging_constant, self.percentile = opts.observer, opts.averaging_constant, opts.percentile
        per_channel = role == "weight"
        n = channels if per_channel else 1
        shape = (channels,) if per_channel else ()
        if self.learnable:
            self.scale = torch.nn.Parameter(torch.ones(n))
        else:
            self.register_buffer("scale", torch.ones(n))
        self.register_buffer("zero_point", torch.zeros(n, dtype=torch.int32))
        self.register_buffer("min_val", torch.full(shape, float("inf")))
        self.register_buffer("max_val", torch.full(shape, float("-inf")))
        self.register_buffer("observer_enabled", torch.ones(1, dtype=torch.long))
        self.register_buffer("fake_quant_enabled", torch.ones(1, dtype=torch.long))
        self.register_buffer("quant_range", torch.tensor(_libprune._integer_range(role, opts.bits), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _libprune._fake_quantize(x, self.scale, self.zero_point, self.min_val, self.max_val,
                                        self.observer_enabled, self.fake_quant_enabled, self.quant_range, self.role,
                                        self.bits, self.observer, self.averaging_constant, self.percentile,
                                        self.learnable, self.training)

    def enable_observer(self, on: bool = True) -> None:
        self.observer_enabled.fill_(1 if on else 0)

    def enable_fake_quant(self, on: bool = True) -> None:
        self.fake_quant_enabled.fill_(1 if on else 0)

    def calculate_qparams(self) -> None:
        """Scale and zero point from the observed range (a range watched with rounding off has none yet)."""
        with torch.no_grad():
            _libprune._calculate_qparams(self.scale, self.zero_point, self.min_val, self.max_val, self.quant_range,
                                         self.role, self.bits)

    def settle_qparams(self) -> None:
        """The parameters convert uses: from the range, except a learned scale (observer off), which stays."""
        _libprune._settle_qparams(self.scale.detach(), self.zero_point, self.min_val, self.max_val,
                                  self.observer_enabled, self.quant_range, self.role, self.bits, self.learnable)

    def extra_repr(self) -> str:
        learn = ", learnable" if self.learnable else ""
        return f"role={self.role}, channels={self.scale.numel()}, bits={self.bits}, observer={self.observer}{learn}"


def _weighted_forward(self, x):
    w = self.weight_fake_quant(self.weight)
    if isinstance(self, torch.nn.Linear):
        return torch.nn.functional.linear(x, w, self.bias)
    return self._conv_forward(x, w, self.bias)


def _round_output(module, inputs, output):
    return module.output_fake_quant(output)


def _round_input(module, inputs):
    return (module.input_fake_quant(inputs[0]),) + tuple(inputs[1:])


def prepare_qat(model: torch.nn.Module, example_inputs, **options) -> list:
    """Installs fake quantisers on `model` in place; returns the units, "layer1.0.conv1 -> layer1.0.relu".

    Options are a recipe's quantization keys: bits (2 to 8), observer, averaging_constant, percentile,
    learnable_scales (LSQ: give ``learnable_scales(model)`` to the optimizer, then freeze the observers),
    keep_float (mixed precision: units named by any of their layers get no quantisers and stay float in
    convert; the units reading them round their input). Each
    conv/linear's weight is rounded per output channel (its forward is the layer's own, with the
    rounded weight) and each unit's output once, after its batch norm and ReLU, except a unit output
    the model returns as it is (logits: a 256-step grid over them would decide the argmax; an output
    reshaped by functional code before it is returned is not recognised and is rounded). C++ also
    leaves unrounded the output of a unit after which no layer runs, and an add's that only code
    reads. Layers called more
    than once in the pass (a ReLU module reused) are left float and not listed. Every name and
    parameter stays; the quantisers' state is buffers of the layers ("conv1.weight_fake_quant.scale").
    """
    _model.check_module(model, "prepare_qat")
    opts = _libprune._quant_options(**options)
    if any(isinstance(m, FakeQuantize) for m in model.modules()) or hasattr(model, "_libprune_qat"):
        raise ValueError("prepare_qat: the model already has fake quantisers. Fix: prepare a model once")
    modules = dict(model.named_modules())
    calls, model_outputs = _calls(model, example_inputs)
    units, kept = _keep_float(_units(calls), opts.keep_float, modules)
    kw = dict(bits=opts.bits, observer=opts.observer, averaging_constant=opts.averaging_constant,
              percentile=opts.percentile, learnable=opts.learnable_scales)
    ends = {u[3] for u in units if u[3] not in model_outputs}  # the outputs that are rounded
    state = model._libprune_qat = {"units": units, "hooks": [], "forwards": {}, "kept_float": kept}  # undo reads it
    try:
        for layer, _, _, end, sources in units:
            m = modules[layer]
            state["forwards"][layer] = m.__dict__.get("forward")  # a forward set on the instance comes back
            m.add_module("weight_fake_quant", FakeQuantize("weight", m.weight.shape[0], **kw))
            m.forward = types.MethodType(_weighted_forward, m)
            if not sources or any(s not in ends for s in sources):
                # Its input is not another unit's rounded output: rounded here, so int8 has its grid.
                m.add_module("input_fake_quant", FakeQuantize("activation", 1, **kw))
                state["hooks"].append(m.register_forward_pre_hook(_round_input))
            if end in model_outputs:
                continue  # a tensor the model returns (logits) stays unrounded
            e = modules[end]
            e.add_module("output_fake_quant", FakeQuantize("activation", 1, **kw))
            state["hooks"].append(e.register_forward_hook(_round_output))
    except BaseException:
        from ._deploy import _unprepare
        _unprepare(model)  # nothing half-installed
        raise
    return [f"{layer} -> {end}" if end != layer else layer for layer, _, _, end, _ in units]


def quantisers(model: torch.nn.Module) -> list:
    """(name, FakeQuantize) of every quantiser in `model`."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuantize)]


def learnable_scales(model: torch.nn.Module) -> list:
    """The quantisers' learnable scales (prepare_qat(..., learnable_scales=True)), for an optimizer
    parameter group without weight decay: ``{"params": learnable_scales(model), "weight_decay": 0}``."""
    return [q.scale for _, q in quantisers(model) if q.learnable]


def enable_observers(model: torch.nn.Module, on: bool = True) -> None:
    """Every observer on or off (off: the ranges are frozen; training goes on with them)."""
    for _, q in quantisers(model):
        q.enable_observer(on)


def enable_fake_quant(model: torch.nn.Module, on: bool = True) -> None:
    """The rounding on or off (off: the model computes in float)."""
    for _, q in quantisers(model):
        q.enable_fake_quant(on)


def calibration_mode(model: torch.nn.Module) -> None:
    """The model in eval mode, its quantisers watching with rounding off: run calibration batches, then
    enable_fake_quant(model) to evaluate the simulated int8 model."""
    model.eval()
    for _, q in quantisers(model):
        q.train()
        q.enable_observer(True)
        q.enable_fake_quant(False)


def calibrate(model: torch.nn.Module, batches) -> None:
    """Post-training calibration: runs `batches` (tensors or tuples of them) in calibration_mode without
    gradients, then sets every quantiser's parameters and turns the rounding on, with the model in eval mode."""
    if not quantisers(model):
        raise ValueError("calibrate: the model has no fake quantisers. Fix: libprune.quantize.prepare_qat(model, x) first")
    calibration_mode(model)
    with torch.no_grad():
        for b in batches:
            model(*_model.as_tuple(b))
    model.eval()
    unseen = [n for n, q in quantisers(model) if not bool(torch.isfinite(q.min_val).all())]
    if unseen:
        raise ValueError(f"calibrate: {len(unseen)} quantiser(s) saw no finite value: {', '.join(unseen[:5])}. Fix: "
                         "calibrate on batches that reach every quantised layer (the ranges seen so far are kept)")
    for _, q in quantisers(model):
        q.calculate_qparams()
        q.enable_fake_quant(True)
        q.enable_observer(False)


def _qparams(q):
    """A quantiser's (scale, zero point) as convert uses them: from its range, or as LSQ learned them."""
    q.settle_qparams()
    return float(q.scale.reshape(-1)[0]), int(q.zero_point.reshape(-1)[0])


def _int8_unit(m, qweight, bias, relu, in_q, out_q):
    """The packed int8 weight (for an output without a grid, out_q None: the dequantised weight) and
    the forward that replaces `m`'s (float in, float out)."""
    in_scale, in_zp = in_q
    if out_q is None:  # the model's output: int8 input and weight, computed in float, unrounded
        def forward_float(self, x):
            q = _libprune._quantize_per_tensor(x, in_scale, in_zp)
            if isinstance(self, torch.nn.Linear):
                y = torch.nn.functional.linear(q.dequantize(), self._int8_packed, bias)
            else:
                y = self._conv_forward(q.dequantize(), self._int8_packed, bias)
            return y.clamp_min(0) if relu is not None else y
        return qweight.dequantize(), forward_float
    out_scale, out_zp = out_q
    ops = torch.ops.quantized
    if isinstance(m, torch.nn.Linear):
        def pack():
            return ops.linear_prepack(qweight, bias)
        op = ops.linear_relu if relu is not None else ops.linear
    else:
        def pack():
            return ops.conv2d_prepack(qweight, bias, list(m.stride), list(m.padding), list(m.dilation), m.groups)
        op = ops.conv2d_relu if relu is not None else ops.conv2d

    def forward(self, x):
        q = _libprune._quantize_per_tensor(x, in_scale, in_zp)
        try:
            return op(q, self._int8_packed, out_scale, out_zp).dequantize()
        except RuntimeError:
            # oneDNN keeps the weight layout of a pack's first shape (a 1x1 conv first run on a 1x1
            # input at batch 1 fails at another batch): pack again for this shape, once.
            self._int8_packed = pack()
            return op(q, self._int8_packed, out_scale, out_zp).dequantize()
    return pack(), forward


def _unit_plan(m, fused, qweight, bias, relu, in_q, out_q):
    """(layer, fused layers, packed, forward, deploy tensors) for one int8 unit; the deploy tensors
    are what C++ writes for a kernel ("weight", "weight_scale", "bias", "qparams": output scale and
    zero point (0, 0: float output), 1 (the output leaves as float), input scale and zero point)."""
    # The per-channel scales as the deploy file keeps them (float32, as C++ does), so a loaded unit
    # computes with exactly the weights the converted one did.
    scales = qweight.q_per_channel_scales().float()
    qweight = torch._make_per_channel_quantized_tensor(qweight.int_repr(), scales.double(),
                                                       torch.zeros(len(scales), dtype=torch.long), 0)
    packed, forward = _int8_unit(m, qweight, bias, relu, in_q, out_q)
    out_scale, out_zp = out_q if out_q is not None else (0.0, 0)
    deploy = {"weight": qweight.int_repr(), "weight_scale": scales,
              "qparams": torch.tensor([out_scale, out_zp, 1.0, in_q[0], in_q[1]], dtype=torch.double)}
    if bias is not None:
        deploy["bias"] = bias
    return m, fused, packed, forward, deploy


def _install(model, state, plans):
    """Swaps the computed plans in: int8 forwards on, hooks and quantisers off."""
    modules = dict(model.named_modules())
    for h in state["hooks"]:
        h.remove()
    for m, fused, packed, forward, deploy in plans:
        if forward is None:
            del m.forward
            continue
        m._int8_packed = packed
        m._int8_deploy = deploy
        m.forward = types.MethodType(forward, m)
        for f in fused:
            f.forward = types.MethodType(lambda self, x: x, f)
    for name, _ in quantisers(model):
        owner, _, attr = name.rpartition(".")
        delattr(modules[owner] if owner else model, attr)
    state["converted"] = True


def convert(model: torch.nn.Module, engine: str = "onednn") -> dict:
    """Replaces a prepared, trained or calibrated model's units with int8 kernels, in place.

    Each conv2d/linear (-> batch norm) (-> ReLU) unit runs as one int8 op (ReLU fused, batch norm
    folded) with the scales and zero points its quantisers hold; its float input is rounded to the
    grid QAT rounded it to and its output leaves as float, so everything between units (residual
    adds, pooling) runs as it did. Returns {"quantized": [...], "skipped": ["name: why", ...]}.
    Raises, changing nothing, when the model was not prepared, a quantiser saw nothing, bits are not
    8, or the engine is not built in.
    """
    state = getattr(model, "_libprune_qat", None)
    if state is None or state.get("converted"):
        raise ValueError("convert: the model has no fake quantisers" + (" (it is already converted)" if state else "")
                         + ". Fix: libprune.quantize.prepare_qat(model, x), then train or calibrate, then convert")
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"convert: engine {engine!r} is not built into this torch; built in: "
                         f"{', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')}. "
                         "Fix: engine=\"onednn\" on x86, \"qnnpack\" on ARM")
    quantisers_ = quantisers(model)
    for name, q in quantisers_:
        if q.bits != 8:
            raise ValueError(f"convert: {name} simulates {q.bits} bits; only 8 bits convert to int8 kernels. "
                             "Fix: prepare_qat(..., bits=8)")
        if not bool(torch.isfinite(q.min_val).all()):
            raise ValueError(f"convert: {name} has not observed any finite value, so it has no range. Fix: calibrate "
                             "(or train) with observers on before converting")
    torch.backends.quantized.engine = engine
    modules = dict(model.named_modules())
    plans: list = []
    report: dict = {"quantized": [], "skipped": list(state.get("kept_float", []))}
    with torch.no_grad():
        for layer, norm, relu, end, sources in state["units"]:
            m = modules[layer]
            reason = _unit_reason(m)
            if reason:
                report["skipped"].append(f"{layer}: {reason}")
                plans.append((m, [], None, None, None))  # back to its own float forward
                continue
            in_q = m.input_fake_quant if hasattr(m, "input_fake_quant") else modules[sources[0]].output_fake_quant
            out_q = getattr(modules[end], "output_fake_quant", None)
            m.weight_fake_quant.settle_qparams()
            bn = modules[norm] if norm else None
            qweight, bias = _libprune._int8_weight_and_bias(
                m.weight, m.bias, m.weight_fake_quant.scale,
                None if bn is None else (bn.weight, bn.bias, bn.running_mean, bn.running_var), 0.0 if bn is None else bn.eps)
            plans.append(_unit_plan(m, [modules[n] for n in (norm, relu) if n], qweight, bias, relu, _qparams(in_q),
                                    None if out_q is None else _qparams(out_q)))
            report["quantized"].append(" + ".join(n for n in (layer, norm, relu) if n))
    _install(model, state, plans)  # everything is computed: now the model changes
    return report


from ._deploy import load_int8, save_int8  # noqa: E402,F401  (built on the functions above)
from ._quant_scan import sensitivity, worst_units  # noqa: E402,F401  (prepare_qat one unit at a time)
