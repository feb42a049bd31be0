"""One vocabulary from Python: PrunerOptions and the keyword arguments of prune/Pruner/Schedule come
from the C++ option lists; user criteria and op rules registered from Python."""
import inspect
import json

import pytest
import torch
import torchvision

import libprune


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def _x():
    torch.manual_seed(1)
    return torch.randn(1, 3, 32, 32)


def _widths(model):
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_prune_and_pruner_take_every_option_by_its_one_name():
    names = [name for name, *_ in libprune.PrunerOptions._defaults()]
    assert {"ratio", "importance", "global_pruning", "ignored_layers", "seed", "max_ratio", "overrides",
            "round_to", "min_channels", "verify", "prune_hidden", "reduction", "normalize"} <= set(names)
    for fn in (libprune.prune, libprune.Pruner.__init__):
        params = inspect.signature(fn).parameters
        assert set(names) <= set(params), fn
        assert params["ratio"].default == 0.5 and params["importance"].default == "l1"
    # The options take effect: an override keeps a layer whole, max_ratio caps the ratio.
    model = _resnet()
    libprune.prune(model, _x(), ratio=0.5, ignored_layers=[model.fc], overrides={"layer1.0.conv1": 0.0}, seed=3,
                   max_ratio=0.6, importance="random")
    assert model.layer1[0].conv1.out_channels == 64 and model.layer1[1].conv1.out_channels == 32
    with pytest.raises(ValueError, match="above max_ratio"):
        libprune.prune(_resnet(), _x(), ratio=0.7, max_ratio=0.6)


def test_options_class_mirrors_the_cpp_struct():
    o = libprune.PrunerOptions(ratio=0.3, importance="l2", ignored_layers=["fc"])
    assert o.ratio == 0.3 and o.importance == "l2" and o.ignored_layers == ["fc"] and o.round_to == 1
    o.round_to = 8
    assert "round_to=8" in repr(o)
    with pytest.raises(TypeError, match="ratio expects a number, got str"):
        libprune.PrunerOptions(ratio="half")
    s = libprune.Schedule("agp", ratio=0.5, start_epoch=1, end_epoch=3)
    assert s.options.ratio == 0.5 and s.ratio_at(3) == pytest.approx(0.5)


def test_old_and_unknown_keywords_are_type_errors_naming_the_fix():
    model = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="'ignored' was renamed to 'ignored_layers'"):
        libprune.prune(model, _x(), ignored=[model.fc])
    with pytest.raises(TypeError, match="'global_ranking' was renamed to 'global_pruning'"):
        libprune.Pruner(model, _x(), global_ranking=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'ratios'.*use one of ratio, target, latency_batch, importance"):
        libprune.prune(model, _x(), ratios=0.5)
    with pytest.raises(TypeError, match="'target' was renamed to 'ratio'"):
        libprune.Schedule("agp", target=0.5, end_epoch=2)
    with pytest.raises(ValueError, match="unknown importance reduction \"median\""):
        libprune.prune(model, _x(), reduction="median")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_criterion_registered_in_python_prunes_and_runs_in_a_recipe(tmp_path):
    seen = []

    def smallest_first(group, tensors):
        # Keep the channels l1 would cut: the negated L1 norm of every member along its dim.
        seen.append(group.name)
        scores = torch.zeros(group.size, dtype=torch.float64)
        for m, (name, dim) in enumerate(group.members):
            if name not in tensors:
                continue
            t = tensors[name].detach().abs().movedim(dim, 0)
            per = t.reshape(t.shape[0], -1).sum(1).double()
            for u, unit in enumerate(group.indices):
                scores[u] -= per[unit[m]].sum()
        return scores

    libprune.register_importance("smallest_first", smallest_first)
    try:
        assert "smallest_first" in libprune.importance_criteria()
        a, b = _resnet(), _resnet()
        libprune.prune(a, _x(), ratio=0.5, ignored_layers=[a.fc], importance="smallest_first")
        libprune.prune(b, _x(), ratio=0.5, ignored_layers=[b.fc], importance="l1")
        assert seen and _widths(a) == _widths(b)
        assert not torch.equal(a.conv1.weight, b.conv1.weight)
        # In a recipe, run by the C++ runner (the GIL released and taken back for the call).
        recipe = tmp_path / "r.json"
        recipe.write_text(json.dumps({
            "model": {"name": "cifar_resnet20"},
            "data": {"kind": "synthetic", "synthetic_size": 8, "synthetic_channels": 1, "limit_train": 32,
                     "limit_eval": 16},
            "training": {"epochs": 2, "batch_size": 16, "threads": 1, "progress": False},
            "pruning": [{"importance": "smallest_first", "schedule": {"start_epoch": 1}, "ratio": 0.5,
                         "ignored_layers": ["fc"]}],
            "report": {"latency_runs": 1, "latency_warmup": 0, "latency_batches": [1]},
            "output_dir": str(tmp_path / "out")}))
        seen.clear()
        summary = libprune.run_recipe(recipe, quiet=True)
        assert seen and summary["cuts"] == 1 and summary["pruned"]["macs"] < summary["dense"]["macs"]
    finally:
        assert libprune.unregister_importance("smallest_first")
    with pytest.raises(ValueError, match="unknown importance \"smallest_first\""):
        libprune.prune(_resnet(), _x(), importance="smallest_first")


def test_a_criterion_with_bad_scores_names_itself_and_the_group_and_changes_nothing():
    libprune.register_importance("too_few", lambda group, tensors: [1.0])
    libprune.register_importance("nan", lambda group, tensors: [float("nan")] * group.size)
    libprune.register_importance("text", lambda group, tensors: "high")
    model = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with pytest.raises(ValueError, match=r"importance \"too_few\" returned 1 scores for group \S+, which has"):
            libprune.prune(model, _x(), importance="too_few")
        with pytest.raises(ValueError, match=r"importance \"nan\" returned nan for channel 0 of group"):
            libprune.prune(model, _x(), importance="nan")
        with pytest.raises(ValueError, match=r"importance \"text\" returned 'high' for group"):
            libprune.prune(model, _x(), importance="text")
        with pytest.raises(ValueError, match="already registered"):
            libprune.register_importance("nan", lambda group, tensors: [])
    finally:
        for name in ("too_few", "nan", "text"):
            libprune.unregister_importance(name)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.conv1.out_channels == 64


class _Swish(torch.autograd.Function):
    """An elementwise op the tracer has no rule for until it is named."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s + x * s * (1 - s))


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.b(_Swish.apply(self.a(x)))


def test_a_custom_autograd_function_gets_a_rule_from_python():
    model, x = _Net(), torch.randn(1, 3, 8, 8)
    group = next(g for g in libprune.DependencyGraph(model, x).groups if g.name == "a.weight")
    assert group.pinned and "_Swish: op not understood" in group.reason
    libprune.register_op_rule("_Swish", like="Silu")
    assert "_Swish" in libprune.ruled_ops()
    group = next(g for g in libprune.DependencyGraph(model, x).groups if g.name == "a.weight")
    assert not group.pinned and group.size == 16
    libprune.prune(model, x, ratio=0.5)
    assert model.a.out_channels == 8 and model.b.in_channels == 8
    with pytest.raises(ValueError, match="\"NoSuchOp\" has no rule"):
        libprune.register_op_rule("Other", like="NoSuchOp")
