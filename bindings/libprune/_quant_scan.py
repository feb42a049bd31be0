"""libprune.quantize.sensitivity: the quantization sensitivity scan for Python nn.Modules (the C++
core's quant::sensitivity, on the Python quantisers prepare_qat places)."""
import json
import time

import torch

from . import _libprune, _model
from . import quantize as _q
from ._deploy import _unprepare
from ._placement import _calls, _keep_float, _units


def _calibrate(model, calibrate):
    _q.calibration_mode(model)
    with torch.no_grad():
        if callable(calibrate):
            calibrate()
        else:
            for b in calibrate:
                model(*_model.as_tuple(b))
    for name, fq in _q.quantisers(model):
        if not bool(torch.isfinite(fq.min_val).all()):
            raise ValueError(f"quantize.sensitivity: {name} saw no finite value during calibration. Fix: calibrate "
                             "must run batches through the model that reach every quantised layer")
        fq.calculate_qparams()
        fq.enable_observer(False)
        fq.enable_fake_quant(False)


def _metric(evaluate):
    value = evaluate()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"quantize.sensitivity: evaluate() returned {type(value).__name__}; it must return a number")
    return float(value)


def sensitivity(model: torch.nn.Module, example_inputs, calibrate, evaluate, *, bits=(8, 4), **options) -> dict:
    """The metric with only one unit quantised, for every unit prepare_qat places, at each bit width.

    For each width, quantisers go on as ``prepare_qat(model, example_inputs, bits=b, **options)`` puts
    them (``observer`` defaults to "min_max", the calibration choice), `calibrate` sets their ranges
    (a callable that runs batches through the model, or a list of batches: tensors or tuples), then
    ``evaluate()`` (the metric of the model as it is; it should put the model in eval mode) is called
    once per unit with only that unit's weight, input and output rounded, and once with all of them.
    Afterwards the model is as it was: no quantisers, every layer's train flag, forward, parameters
    and buffers unchanged (calibration runs in eval mode). Bad input raises, naming the problem, with the model as
    it was.

    Returns {"bits", "baseline" (the float metric), "all" (every unit at once, per width), "seconds",
    "rows": [{"unit": "layer1.0.conv1 -> layer1.0.relu", "metric": [per width]}]}.
    """
    _model.check_module(model, "quantize.sensitivity")
    if not callable(evaluate):
        raise TypeError("quantize.sensitivity: evaluate must be a callable returning the metric of the model as it "
                        f"is, got {type(evaluate).__name__}")
    if not callable(calibrate) and not isinstance(calibrate, (list, tuple)):
        raise TypeError("quantize.sensitivity: calibrate must be a callable that runs calibration batches through "
                        f"the model, or a list of batches, got {type(calibrate).__name__}")
    bits = list(bits)
    problem = _libprune._check_sensitivity_bits("quantize.sensitivity bits", bits)
    if problem:
        raise ValueError(problem)
    if _q.quantisers(model) or hasattr(model, "_libprune_qat"):
        raise ValueError("quantize.sensitivity: the model already has fake quantisers. Fix: scan the float model, "
                         "before prepare_qat")
    options = {"observer": "min_max", **options, "learnable_scales": False}  # nothing trains
    _libprune._quant_options(**options)  # bad options raise before any change
    if options.get("keep_float"):  # so do bad names, before the baseline's evaluate()
        _keep_float(_units(_calls(model, example_inputs)[0]), options["keep_float"], dict(model.named_modules()))
    started = time.perf_counter()
    with _model.eval_mode(model):  # every layer's train flag comes back, also when evaluate raises
        baseline = _metric(evaluate)
        rows, everything = None, []
        for b in bits:
            units = _q.prepare_qat(model, example_inputs, **dict(options, bits=b))
            try:
                if rows is None:
                    rows = [{"unit": u, "metric": []} for u in units]
                _calibrate(model, calibrate)
                modules = dict(model.named_modules())
                for row, (layer, _, _, end, _) in zip(rows, model._libprune_qat["units"]):
                    own = [q for q in (getattr(modules[layer], "weight_fake_quant", None),
                                       getattr(modules[layer], "input_fake_quant", None),
                                       getattr(modules[end], "output_fake_quant", None)) if q is not None]
                    for q in own:
                        q.enable_fake_quant(True)
                    row["metric"].append(_metric(evaluate))
                    for q in own:
                        q.enable_fake_quant(False)
                _q.enable_fake_quant(model, True)
                everything.append(_metric(evaluate))
            finally:
                _unprepare(model)
    return {"bits": bits, "baseline": baseline, "all": everything, "rows": rows or [],
            "seconds": time.perf_counter() - started}


def worst_units(scan: dict, count: int, bits: int = 8) -> list:
    """keep_float's names for mixed precision: the layer of each of the `count` units whose metric at
    `bits` is lowest in a sensitivity() result (ties in call order; the C++ core's quant::worst_units).
    Raises naming the problem for a width the scan lacks, or a count that leaves no unit quantised.

        scan = lq.sensitivity(model, x, batches, evaluate, bits=[8])
        lq.prepare_qat(model, x, keep_float=lq.worst_units(scan, 3))
    """
    return _libprune._worst_units(json.dumps({"bits": scan["bits"], "rows": scan["rows"]}), int(bits), int(count))
