"""libprune's Python API. Every decision runs in the C++ core; these functions turn Python models,
optimizers and keyword arguments into what the core reads. Options are the core's own
(libprune.PrunerOptions): the same names as C++ and recipes, checked by the same code."""
import inspect
import json

import torch

from . import _layers, _libprune, _model


def _pruner_options(model, options, where):
    """The C++ PrunerOptions from keyword arguments; ignored_layers may name modules or pass them."""
    if "ignored_layers" in options:
        options = dict(options, ignored_layers=_model.module_names(model, options["ignored_layers"]))
    return _libprune.PrunerOptions._from_kwargs(where, options)


def count_ops(model, example_inputs):
    """Parameters and MACs of one forward pass of any nn.Module, traced in C++ from autograd.

    Returns an OpCount that unpacks as ``(macs, params)`` and also carries ``matmul_macs``,
    ``norm_elements``, ``pool_elements``, ``elementwise_elements`` and per-layer ``layers``.
    The model runs once in eval mode; its train flags and parameters are left as they were.
    """
    _model.check_module(model, "count_ops")
    params = list(model.named_parameters())
    with _model.eval_mode(model):
        return _libprune._count_ops(_model.forward(model, example_inputs), params, _model.describe(example_inputs))


def _attach(pruner, latency_table, sensitivity, opts):
    """The latency table and sensitivity scan (libprune.sensitivity's dict) a target's allocation reads."""
    if latency_table is not None:
        pruner.set_latency_table(latency_table)
    if sensitivity is not None:
        if opts.allocation != "sensitivity":
            raise ValueError("sensitivity= is read by allocation=\"sensitivity\" only, and allocation is "
                             f"{opts.allocation!r}. Fix: pass allocation=\"sensitivity\" with a target, or drop the scan")
        if not isinstance(sensitivity, dict):
            raise TypeError("sensitivity must be the dict libprune.sensitivity(model, x, evaluate) returns, got "
                            f"{type(sensitivity).__name__}")
        pruner.set_sensitivity(json.dumps(sensitivity))


def prune(model, example_inputs, *, optimizer=None, latency_table=None, sensitivity=None, **options):
    """Prunes `model` in place (and `optimizer`'s state with it) and returns the applied Plan.

    Options are PrunerOptions' (ratio, importance, ignored_layers, global_pruning, round_to, ...),
    the same as a recipe's pruning stage keys. The dependency graph is traced in C++ from one
    forward pass on `example_inputs`. After the cut the example forward runs again; if the model's
    own code breaks (a hard-coded reshape), every tensor is rolled back, the offending groups are
    pinned and the rest is cut. Attention heads go whole, and head-count attributes follow through
    the head adapters; the hidden size of a model with attention is kept unless prune_hidden is set.

    ``target={"latency": 0.4}`` (or ``latency_ms``, ``macs``, ``params``) cuts to a budget instead of a
    ratio; a latency budget is costed with ``latency_table`` (libprune.latency_table, measured here).
    With ``allocation="sensitivity"`` the budget is divided by ``sensitivity``, the scan
    libprune.sensitivity took of this model: the least predicted metric drop per cost saved.
    """
    _model.check_module(model, "prune")
    held, state = _model.optimizer_view(model, optimizer)
    opts = _pruner_options(model, options, "prune()")
    pruner = _libprune._Pruner(model, _layers, _model.forward(model, example_inputs), opts)
    _attach(pruner, latency_table, sensitivity, opts)
    plan, pins = pruner.step(held, state)
    plan.verification_pins = list(pins)
    return plan


class DependencyGraph:
    """Groups of coupled channels of `model`, traced from one forward pass on `example_inputs`."""

    def __init__(self, model, example_inputs, prune_hidden=False):
        _model.check_module(model, "DependencyGraph")
        opts = _libprune.PrunerOptions(ratio=0.0, prune_hidden=bool(prune_hidden))
        self._graph = _libprune._Pruner(model, _layers, _model.forward(model, example_inputs), opts).graph()

    @property
    def groups(self):
        return self._graph.groups

    def explain(self):
        return self._graph.explain()

    def __repr__(self):
        return self.explain().splitlines()[0]


def apply_plan(model, example_inputs, plan, optimizer=None):
    """Replays a recorded plan on `model` (all or nothing), then checks the example forward."""
    _model.check_module(model, "apply_plan")
    held, state = _model.optimizer_view(model, optimizer)
    _libprune._apply_plan(model, _layers, plan, held, state)
    with _model.eval_mode(model), torch.no_grad():
        _model.forward(model, example_inputs)()
    return model


def remove_units(model, example_inputs, units, optimizer=None):
    """Removes chosen units in place and returns the Plan: what transformers' ``prune_heads`` does
    for heads, for any model. ``units`` maps a module name to the ordinals of its output units to
    remove, where unit k owns the module's k-th block of outputs as it is now: a conv's filter, a
    linear's neuron, a head of an attention projection
    (``{"bert.encoder.layer.0.attention.self.query": [1, 3]}`` removes heads 1 and 3 of layer 0 from
    query, key, value and the output projection). On an unpruned model the ordinals are the
    original indices; after a cut they count the units left (prune_heads takes original indices). Every coupled tensor and
    the optimizer's state (AdamW's moments) follow and the cut is verified, as in a ratio cut; the
    tensors stay the same objects, so the optimizer goes on (prune_heads builds new linears and
    loses their state)."""
    _model.check_module(model, "remove_units")
    held, state = _model.optimizer_view(model, optimizer)
    pruner = _libprune._Pruner(model, _layers, _model.forward(model, example_inputs), _libprune.PrunerOptions(ratio=0.0))
    plan = pruner.remove_units({str(k): [int(u) for u in v] for k, v in dict(units).items()}, held, state)
    with _model.eval_mode(model), torch.no_grad():
        _model.forward(model, example_inputs)()
    return plan


def check_plan(model_before, model_after, plan, example_inputs, tolerance=1e-4):
    """Checks that `model_after` is `model_before` with `plan` cut, exactly: returns an ExactReport.

    The dense model with every parameter the plan cuts zeroed at the removed indices (producers'
    rows, norm scales and shifts, consumers' input columns) must give the pruned model's outputs to
    float error: ``worst`` (largest difference over the output's largest magnitude) <= ``tolerance``.
    Both run in eval mode, without grad, with quantisers off. When they differ, ``group`` names the
    first group whose own cut breaks it (found by cutting each group alone on `model_before` and
    undoing it). Groups a LayerNorm or GroupNorm normalises across are in ``normalised`` and checked
    for shapes only. `model_before` ends as it began; the report is truthy when exact.
    """
    _model.check_module(model_before, "check_plan")
    _model.check_module(model_after, "check_plan")
    if not isinstance(plan, _libprune.Plan):
        raise TypeError(f"check_plan: expected a libprune.Plan, got {type(plan).__name__}")
    return _libprune._check_exact(model_before, _model.forward(model_before, example_inputs), model_after,
                                  _model.forward(model_after, example_inputs), _layers, plan, float(tolerance))


class Pruner:
    """A pruner that lives across steps, for schedules inside a plain PyTorch loop.

    Ratios count against the sizes it first saw, so ``step(ratio=s_t)`` along a Schedule reaches
    the same architecture as one step to the final ratio. Options are PrunerOptions'; criteria:
    l1, l2, bn_scale, taylor (uses each parameter's current ``.grad``: call it after
    ``loss.backward()``), fpgm, lamp, random, or one registered with register_importance.

        pruner = libprune.Pruner(model, x, importance="taylor", ignored_layers=[model.fc], round_to=8)
        schedule = libprune.Schedule("agp", ratio=0.5, start_epoch=1, end_epoch=4)
        for epoch in range(epochs):
            if schedule.prunes_at(epoch):
                pruner.step(ratio=schedule.ratio_at(epoch), optimizer=opt)
            train_one_epoch(...)
    """

    def __init__(self, model, example_inputs, *, latency_table=None, sensitivity=None, **options):
        _model.check_module(model, "Pruner")
        self.model = model
        opts = _pruner_options(model, options, "Pruner()")
        self._pruner = _libprune._Pruner(model, _layers, _model.forward(model, example_inputs), opts)
        _attach(self._pruner, latency_table, sensitivity, opts)
        self._pruner.record_sizes()

    def step(self, ratio=None, optimizer=None, progress=None):
        """Cuts to `ratio` (or the current one) in place; returns the applied Plan. With a target,
        `progress` in [0, 1] is how far toward its budget this step goes (a schedule's ratio_at
        over its final ratio; default 1)."""
        if ratio is not None:
            self._pruner.set_ratio(float(ratio))
        if progress is not None:
            self._pruner.set_progress(float(progress))
        held, state = _model.optimizer_view(self.model, optimizer)
        plan, pins = self._pruner.step(held, state)
        plan.verification_pins = list(pins)
        return plan

    @property
    def history(self):
        """Every applied Plan, in order (replay them with apply_plan to rebuild the architecture)."""
        return list(self._pruner.history)

    def graph(self):
        return self._pruner.graph()


def sensitivity(model, example_inputs, evaluate, *, ratios=(0.25, 0.5, 0.75), **options):
    """Sensitivity scan: ``evaluate()`` (a number, e.g. top-1 % on held-out data) of the model as it is,
    then with only one group cut, for every group prune() could cut, at each ratio of its units.

    Units are ranked by the options' ``importance`` (and ``min_channels``, ``round_to``,
    ``ignored_layers`` apply), as prune() would rank them. Each cut is simulated by zeroing what it
    removes, which the cut model computes exactly, so nothing is reallocated and the model is as it
    was afterwards, also when evaluate() raises. Returns a dict: ``ratios``, ``baseline``, ``seconds``
    and ``rows``, one per group: ``group``, ``modules`` (whose outputs it cuts), ``size``, ``kept``
    and ``metric`` (at each ratio)."""
    _model.check_module(model, "sensitivity")
    if not callable(evaluate):
        raise TypeError("sensitivity: evaluate must be a callable returning the metric of the model as it is, got "
                        + type(evaluate).__name__)
    opts = _pruner_options(model, options, "sensitivity()")
    pruner = _libprune._Pruner(model, _layers, _model.forward(model, example_inputs), opts)
    return json.loads(pruner.sensitivity(evaluate, [float(r) for r in ratios]))


def latency_table(model, example_inputs, *, threads=0, channels_last=True, runs=7, warmup=2, cache_dir=""):
    """Times each conv and linear layer of `model` on its own at sampled widths, on this machine, at
    the batch of `example_inputs` (the deployment batch): the table a latency target is costed with.

    The whole model is timed too (eval mode; batch norms fused by torch.fx where it can trace the
    model; channels_last when asked), and what its layers do not account for is the table's rest.
    Tables are cached under `cache_dir` ("" : $LIBPRUNE_CACHE_DIR or ~/.cache/libprune; "none": no
    cache), keyed by CPU, ISA, LibTorch, threads and layout; a foreign cache is measured again.
    """
    _model.check_module(model, "latency_table")
    dense_ms = _dense_ms(model, example_inputs, int(threads), bool(channels_last))
    with _model.eval_mode(model):
        return _libprune._latency_table(_model.forward(model, example_inputs), list(model.named_parameters()), dense_ms,
                                        int(threads), bool(channels_last), int(runs), int(warmup), str(cache_dir))


def _dense_ms(model, example_inputs, threads, channels_last, runs=20, warmup=5):
    """The whole model's median latency in ms, as deployed (see latency_table)."""
    import copy
    net = copy.deepcopy(model).eval()
    try:
        from torch.fx.experimental.optimization import fuse
        net = fuse(net)
    except Exception:  # a model torch.fx cannot trace is timed with its batch norms
        pass
    inputs = _model.as_tuple(example_inputs)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        inputs = tuple(t.contiguous(memory_format=torch.channels_last)
                       if isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_floating_point() else t for t in inputs)
    with torch.inference_mode():
        return _libprune._time_calls(lambda: net(*inputs), int(threads), int(runs), int(warmup))


def register_importance(name, fn):
    """Adds a criterion that recipes, prune(importance=name) and Pruner can name.

    ``fn(group, tensors)`` gets a Group (its ``members`` as (tensor name, dim) and ``indices[unit][member]``)
    and a dict of the members' parameters by name, and returns one score per unit (a tensor or a
    list of numbers); the lowest go first. The wrong count or a non-finite score is a ValueError
    naming the criterion and the group, and nothing is pruned.
    """
    if not callable(fn):
        raise TypeError(f"register_importance: expected a callable, got {type(fn).__name__}")
    _libprune._register_importance(str(name), fn)
    return fn


def unregister_importance(name):
    """Removes a registered criterion; False when there was none (built-ins stay)."""
    return _libprune._unregister_importance(str(name))


def register_op_rule(op, like):
    """Traces op `op` (a custom autograd.Function MyGelu traces as "MyGelu") with the rule of `like`,
    an op the dependency graph knows ("Gelu", "Relu", "Add", ...; see libprune.ruled_ops())."""
    _libprune._register_op_alias(str(op), str(like))


def run_recipe(path, overrides=None, resume=False, quiet=False):
    """Runs a recipe (configs/*.json) with the C++ runner and returns its summary as a dict.

    `overrides` maps dotted keys to values, like the runner's ``--set``:
    ``run_recipe("configs/x.json", {"training.epochs": 2, "output_dir": "runs/y"})``.
    """
    sets = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in (overrides or {}).items()]
    completed, summary, output_dir = _libprune._run_recipe(str(path), sets, bool(resume), not quiet)
    if not completed:
        raise KeyboardInterrupt(f"run_recipe stopped early; the last checkpoint in {output_dir} is loadable: "
                                "call again with resume=True")
    return json.loads(summary)


def _with_options(fn, options_class, keep):
    """Gives `fn` a signature listing every option of `options_class` as a keyword (help(), IDEs,
    stub checks), in place of **options; `keep` names the parameters before them."""
    sig = inspect.signature(fn)
    params = [p for name, p in sig.parameters.items() if name in keep]
    for name, default, *_ in options_class._defaults():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
    fn.__signature__ = sig.replace(parameters=params)
    return fn


_with_options(prune, _libprune.PrunerOptions, ("model", "example_inputs", "optimizer", "latency_table", "sensitivity"))
_with_options(Pruner.__init__, _libprune.PrunerOptions, ("self", "model", "example_inputs", "latency_table", "sensitivity"))
