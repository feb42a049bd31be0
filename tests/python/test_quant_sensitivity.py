"""libprune.quantize.sensitivity: each point is the model with only that unit quantised at that width,
and the model is as it was afterwards, also after bad input."""
import copy

import pytest
import torch

import libprune.quantize as lq


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        self.conv2, self.bn2, self.relu2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        self.pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(8, 10)

    def forward(self, x):
        x = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _setup():
    torch.manual_seed(0)
    model = _Net()
    with torch.no_grad():  # batch-norm statistics unlike their initial ones
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8) * 0.5 + 0.2)
    batches = [torch.randn(16, 3, 8, 8) * 0.5 + 0.2 for _ in range(2)]
    held_out, w = torch.randn(16, 3, 8, 8) * 0.5 + 0.2, torch.randn(16, 10)

    def metric(m):
        m.eval()
        with torch.no_grad():
            return float((m(held_out) * w).sum())
    return model, batches, metric


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def _only(model, batches, bits, rounding):
    """The metric of a copy with prepare_qat's quantisers at `bits`, calibrated, rounding where `rounding` says."""
    twin = copy.deepcopy(model)
    lq.prepare_qat(twin, batches[0][:2], bits=bits, observer="min_max")
    lq.calibrate(twin, batches)
    for name, q in lq.quantisers(twin):
        q.enable_fake_quant(rounding(name))
    return twin


def test_each_point_is_the_model_with_only_that_unit_quantised_and_nothing_changes():
    model, batches, metric = _setup()
    model.train()
    before = _state(model)
    scan = lq.sensitivity(model, batches[0][:2], batches, lambda: metric(model), bits=[8, 4])
    assert _unchanged(model, before) and model.training
    assert not lq.quantisers(model) and "forward" not in model.conv1.__dict__ and not model.relu1._forward_hooks
    assert scan["baseline"] == pytest.approx(metric(model))
    assert [r["unit"] for r in scan["rows"]] == ["conv1 -> relu1", "conv2 -> relu2", "fc"]
    units = {"conv1 -> relu1": ("conv1", "relu1"), "conv2 -> relu2": ("conv2", "relu2"), "fc": ("fc", "fc")}
    for row in scan["rows"]:
        layer, end = units[row["unit"]]
        own = {f"{layer}.weight_fake_quant", f"{layer}.input_fake_quant", f"{end}.output_fake_quant"}
        for k, bits in enumerate(scan["bits"]):
            expected = metric(_only(model, batches, bits, lambda name: name in own))
            assert row["metric"][k] == pytest.approx(expected, rel=1e-6), (row["unit"], bits)
            assert row["metric"][k] != pytest.approx(scan["baseline"], rel=1e-6), (row["unit"], bits)
    for k, bits in enumerate(scan["bits"]):
        assert scan["all"][k] == pytest.approx(metric(_only(model, batches, bits, lambda name: True)), rel=1e-6)
    drop = [sum(abs(r["metric"][k] - scan["baseline"]) for r in scan["rows"]) for k in range(2)]
    assert drop[1] > 4 * drop[0]  # 4 bits cost more than 8
    # A callable calibration does what the list does.
    again = lq.sensitivity(model, batches[0][:2], lambda: [model(b) for b in batches], lambda: metric(model), bits=[8])
    assert [r["metric"][0] for r in again["rows"]] == [r["metric"][0] for r in scan["rows"]]
    # worst_units names the layers of the units whose 4-bit point is lowest, for keep_float.
    order = sorted(scan["rows"], key=lambda r: r["metric"][1])
    assert lq.worst_units(scan, 2, bits=4) == [r["unit"].split(" -> ")[0] for r in order[:2]]
    with pytest.raises(ValueError, match="no 6-bit column"):
        lq.worst_units(scan, 1, bits=6)


def test_bad_input_names_the_problem_and_leaves_the_model_as_it_was():
    model, batches, metric = _setup()
    before = _state(model)
    x = batches[0][:2]
    with pytest.raises(ValueError, match=r"bits.1 is 9 bits; the quantisers simulate 2 to 8"):
        lq.sensitivity(model, x, batches, lambda: metric(model), bits=[8, 9])
    with pytest.raises(ValueError, match="repeats 4 bits"):
        lq.sensitivity(model, x, batches, lambda: metric(model), bits=[4, 4])
    with pytest.raises(TypeError, match="evaluate must be a callable"):
        lq.sensitivity(model, x, batches, 1.0)
    with pytest.raises(TypeError, match="calibrate must be a callable"):
        lq.sensitivity(model, x, None, lambda: metric(model))
    with pytest.raises(ValueError, match="observer"):
        lq.sensitivity(model, x, batches, lambda: metric(model), observer="histogram")
    lq.sensitivity(model, x, batches, lambda: metric(model), bits=[8], learnable_scales=True)  # nothing learns: ignored
    with pytest.raises(ValueError, match=r"conv1.weight_fake_quant saw no finite value during calibration"):
        lq.sensitivity(model, x, [], lambda: metric(model))
    with pytest.raises(TypeError, match="evaluate\\(\\) returned str"):
        lq.sensitivity(model, x, batches, lambda: "93%")
    assert _unchanged(model, before) and not lq.quantisers(model) and "forward" not in model.fc.__dict__
    # An evaluate that raises mid-scan (quantisers on): the model as it was, each layer's train flag,
    # hooks and forwards included; a forward set on a layer before the scan is still there.
    model.train()
    model.bn1.eval()
    own_forward = model.conv2.forward = lambda t: torch.nn.Conv2d.forward(model.conv2, t)
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("metric failed")
        return metric(model)
    with pytest.raises(RuntimeError, match="metric failed"):
        lq.sensitivity(model, x, batches, failing)
    assert len(calls) == 3 and not lq.quantisers(model) and not hasattr(model, "_libprune_qat")
    assert model.training and not model.bn1.training and model.bn2.training
    assert not model.conv1._forward_pre_hooks and not model.relu1._forward_hooks
    assert "forward" not in model.conv1.__dict__ and model.conv2.forward is own_forward
    assert _unchanged(model, before)
    del model.conv2.forward
    lq.prepare_qat(model, x)
    with pytest.raises(ValueError, match="before prepare_qat"):
        lq.sensitivity(model, x, batches, lambda: metric(model))


def test_prepare_qat_that_fails_partway_leaves_nothing_installed():
    model, batches, _ = _setup()
    model.conv2.weight_fake_quant = 5  # an attribute in the way of the second unit's quantiser
    with pytest.raises(KeyError, match="weight_fake_quant"):
        lq.prepare_qat(model, batches[0][:2])
    assert not lq.quantisers(model) and not hasattr(model, "_libprune_qat")
    assert "forward" not in model.conv1.__dict__ and not model.conv1._forward_pre_hooks
    assert not model.relu1._forward_hooks
    del model.conv2.weight_fake_quant
    assert lq.prepare_qat(model, batches[0][:2]) == ["conv1 -> relu1", "conv2 -> relu2", "fc"]
