"""The exactness property: a pruned model equals its dense original with the plan's channels
silenced (libprune.check_plan), over every torchvision classification model and the odd modules,
and the pruner's verification rolls back a cut that runs but computes something else."""
import copy
import json
import inspect
import os

import pytest
import torch
import torchvision

import libprune
from model_fixtures import randomise


def _builders():
    import torchvision.models as M
    return sorted(n for n in dir(M) if n[0].islower() and inspect.isfunction(getattr(M, n))
                  and not n.startswith("get_") and n != "list_models")


# Models that need a larger input than 64x64 (fixed position tables, deep strides, window sizes).
_SIZE = {"inception_v3": 96, "googlenet": 64}
_FIXED_224 = ("vit_", "swin_", "maxvit")
# The two giants (600M+ parameters) take three of the suite's minutes and add no graph the smaller
# members of their families (regnet_y_32gf, vit_l_16) do not have; LIBPRUNE_SLOW_TESTS=1 runs them.
_GIANTS = ("regnet_y_128gf", "vit_h_14")


def _model(name, size, batch=2):
    """A torchvision model with random weights and norms, in eval mode; a copy; an input."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    randomise(model)
    return model, copy.deepcopy(model), torch.randn(batch, 3, size, size)


def _classifier(model, classes):
    return [m for m in model.modules() if (isinstance(m, torch.nn.Linear) and m.out_features == classes)
            or (isinstance(m, torch.nn.Conv2d) and m.out_channels == classes)]


@pytest.mark.parametrize("name", _builders())
def test_every_torchvision_model_prunes_exactly(name):
    if name in _GIANTS and os.environ.get("LIBPRUNE_SLOW_TESTS") != "1":
        pytest.skip("a giant of a family tested smaller; LIBPRUNE_SLOW_TESTS=1 runs it")
    model, dense, x = _model(name, 224 if name.startswith(_FIXED_224) else _SIZE.get(name, 64))
    plan = libprune.prune(model, x, ratio=0.5, ignored_layers=_classifier(model, 10))
    assert not plan.empty(), f"{name}: nothing was cut"
    report = libprune.check_plan(dense, model, plan, x)
    assert report.exact, f"{name}: {report!r}"
    # A group the verification pinned because its cut computed something else is a graph error
    # that the safety net caught: there must be none.
    wrong = [p for p in plan.verification_pins if "computes something else" in p]
    assert not wrong, f"{name}: {wrong}"


def test_check_plan_catches_a_model_cut_by_a_plan_with_one_wrong_index():
    model, dense, x = _model("resnet18", 32)
    plan = libprune.Pruner(copy.deepcopy(model), x, ratio=0.5, ignored_layers=["fc"]).step()
    assert libprune.check_plan(dense, libprune.apply_plan(copy.deepcopy(model), x, plan), plan, x)
    # layer2.0.conv2 reads one removed channel of layer2.0.conv1 instead of a kept one: shapes fit.
    cuts = {(t, d): keep for t, d, _, keep in plan.cuts}
    keep = cuts[("layer2.0.conv2.weight", 1)]
    gone = next(i for i in range(128) if i not in keep)
    data = json.loads(plan.to_json())
    for c in data["cuts"]:
        if c["tensor"] == "layer2.0.conv2.weight" and c["dim"] == 1:
            c["keep"] = sorted(keep[:-1] + [gone])
    wrong = libprune.Plan.from_json(json.dumps(data))
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    report = libprune.check_plan(dense, libprune.apply_plan(model, x, wrong), wrong, x)
    assert not report and report.worst > 1e-3, repr(report)
    assert all(torch.equal(v, before[k]) for k, v in dense.state_dict().items())  # before is as it was


class _SoftmaxAcross(torch.nn.Module):
    """conv -> softmax across the channels -> conv: cutting `a` renormalises the kept channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.softmax(self.a(x), 1))))


class _OpaqueHeads(torch.nn.Module):
    """Heads in an attribute no adapter knows, the head size from -1: a cut narrows every head."""

    def __init__(self):
        super().__init__()
        self.n_h = 4
        self.q, self.k, self.v, self.out = (torch.nn.Linear(16, 16) for _ in range(4))

    def _split(self, t):
        return t.view(t.shape[0], t.shape[1], self.n_h, -1).transpose(1, 2)

    def forward(self, x):
        a = torch.softmax(self._split(self.q(x)) @ self._split(self.k(x)).transpose(-2, -1), -1)
        return self.out((a @ self._split(self.v(x))).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


@pytest.mark.parametrize("kind", ["softmax", "heads"])
def test_a_cut_that_runs_but_computes_something_else_is_named_and_rolled_back(kind):
    torch.manual_seed(0)
    model, x, head = ((_SoftmaxAcross(), torch.randn(2, 3, 4, 4), "c") if kind == "softmax"
                      else (_OpaqueHeads(), torch.randn(2, 5, 16), "out"))
    dense = copy.deepcopy(model)
    # Without verification the cut lands, and check_plan names the group that breaks it.
    unverified = copy.deepcopy(model)
    plan = libprune.prune(unverified, x, ratio=0.5, ignored_layers=[head], verify=False)
    report = libprune.check_plan(dense, unverified, plan, x)
    assert not report.exact and report.group in (("a.weight",) if kind == "softmax" else ("q.weight", "k.weight",
                                                                                         "v.weight")), repr(report)
    # Verifying shapes only (verify_values=False) lets it land too: it runs and keeps its shapes.
    shapes_only = copy.deepcopy(model)
    plan = libprune.prune(shapes_only, x, ratio=0.5, ignored_layers=[head], verify_values=False)
    assert plan.verification_pins == [] and not libprune.check_plan(dense, shapes_only, plan, x)
    # With it (the default), that group is pinned with the reason, and the rest is cut exactly.
    pruner = libprune.Pruner(model, x, ratio=0.5, ignored_layers=[head])
    plan = pruner.step()
    assert any("computes something else" in p for p in plan.verification_pins), plan.verification_pins
    assert "computes something else" in pruner.graph().explain()
    assert libprune.check_plan(dense, model, plan, x)
    if kind == "softmax":
        assert model.a.out_channels == 8 and model.b.out_channels == 4


def test_layer_norm_channels_are_cut_and_reported_as_normalised():
    model, dense, x = _model("convnext_tiny", 64, batch=1)
    graph = libprune.DependencyGraph(model, x)
    normalised = {g.name for g in graph.groups if g.normalised and not g.pinned}
    assert "features.0.0.weight" in normalised
    plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[model.classifier[2]])
    assert model.features[0][0].out_channels == 48 and plan.verification_pins == []
    report = libprune.check_plan(dense, model, plan, x)
    assert report.exact and "features.0.0.weight" in report.normalised and report.worst < 1e-5, repr(report)


def test_check_plan_refuses_what_is_not_a_plan():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="expected a libprune.Plan"):
        libprune.check_plan(model, model, {"cuts": []}, torch.randn(1, 2))
    plan = libprune.prune(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 2)), torch.randn(1, 2),
                          ratio=0.5, ignored_layers=["1"])
    with pytest.raises(ValueError, match="which the model does not have"):
        libprune.check_plan(model, model, plan, torch.randn(1, 2))
