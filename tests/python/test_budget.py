"""Budgeted pruning from Python: latency tables of nn.Modules, MACs and latency targets."""
import json

import pytest
import torch

import libprune


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))


def _x(n=4):
    torch.manual_seed(1)
    return torch.randn(n, 3, 12, 12)


def test_latency_table_measures_once_then_reuses_its_cache(tmp_path, monkeypatch):
    model, x = _net(), _x()
    # The whole model's time is given, and roomy: a 0.1 ms model's layers timed alone on a loaded
    # machine can add up to more than it, and are then timed again (tested in C++), moving the counts.
    monkeypatch.setattr(libprune._api, "_dense_ms", lambda *args, **kwargs: 1000.0)
    table = libprune.latency_table(model, x, runs=3, warmup=1, cache_dir=str(tmp_path))
    assert table.layers == ["0.weight", "3.weight", "8.weight", "0.weight:relu.0", "3.weight:relu.0"]
    # the layers' grids, then the first ReLU's widths; the second ReLU has its shape
    assert table.entries_measured == 4 + 16 + 4 * 3 + 4 and table.entries_reused == 4
    assert table.dense_ms == 1000.0 and table.cache_file.startswith(str(tmp_path))
    assert table._predict_ms(lambda: [model(x)], list(model.named_parameters())) == pytest.approx(table.dense_ms)
    again = libprune.latency_table(model, x, runs=3, warmup=1, cache_dir=str(tmp_path))
    assert again.entries_measured == 0 and again.entries_reused == table.entries_measured + 4
    assert again.op_ms(1, 32, 16) == table.op_ms(1, 32, 16)


def test_macs_target_meets_its_budget_and_steps_toward_it():
    model, x = _net(), _x(2)
    dense, _ = libprune.count_ops(model, x)
    pruner = libprune.Pruner(model, x, target={"macs": 0.5}, ignored_layers=[model[8]])
    plan = pruner.step(progress=0.5)
    assert plan.notes[0].startswith("budget macs 0.500 (this step: 0.750 of dense)")
    assert 0.5 < plan.importance_kept < 1 and "importance kept" in plan.notes[0]
    assert 0.65 * dense < libprune.count_ops(model, x).macs <= 0.75 * dense
    pruner.step(progress=1)
    assert 0.4 * dense < libprune.count_ops(model, x).macs <= 0.5 * dense
    assert model(x).shape == (2, 10)


def test_latency_target_with_a_table(tmp_path, monkeypatch):
    model, x = _net(), _x()
    # A made-up machine, so that timing noise cannot move the cut: conv and linear entries cost
    # in x out / 1024 ms, ReLUs nothing, and the whole model 0.01 ms more than its layers.
    monkeypatch.setattr(libprune._api, "_dense_ms", lambda *args, **kwargs: 1000.0)
    timed = libprune.latency_table(model, x, runs=1, warmup=0, cache_dir=str(tmp_path))
    with open(timed.cache_file) as f:
        cache = json.load(f)
    layers_ms = 0.0
    for key, grid in cache["ops"].items():
        costly = not key.startswith("relu")
        grid["ms"] = [i * o / 1024 if costly else 0.0 for i in grid["in"] for o in grid["out"]]
        layers_ms += grid["ms"][-1]
    with open(timed.cache_file, "w") as f:
        json.dump(cache, f)
    monkeypatch.setattr(libprune._api, "_dense_ms", lambda *args, **kwargs: layers_ms + 0.01)
    table = libprune.latency_table(model, x, runs=3, warmup=1, cache_dir=str(tmp_path))
    assert table.entries_measured == 0 and table.op_ms(0, 3, 32) == pytest.approx(3 * 32 / 1024)
    plan = libprune.prune(model, x, target={"latency": 0.6}, latency_table=table, ignored_layers=[model[8]])
    assert "predicted" in plan.notes[0]
    assert table._predict_ms(lambda: [model(x)], list(model.named_parameters())) <= 0.6 * table.dense_ms + 1e-9


def test_bad_targets():
    model, x = _net(), _x(2)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match='budget kind "speed" does not exist'):
        libprune.prune(model, x, target={"speed": 0.5})
    with pytest.raises(ValueError, match="needs a latency table"):
        libprune.prune(model, x, target={"latency": 0.5})
    with pytest.raises(ValueError, match="cannot be reached"):
        libprune.prune(model, x, target={"params": 0.001}, ignored_layers=[model[8]])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _randomise_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)


def test_sensitivity_scan_matches_real_cuts_and_leaves_the_model_as_it_was():
    import copy
    model, x = _net(), _x()
    _randomise_norms(model)
    weights = torch.randn(4, 10)

    def metric(net):
        net.eval()
        with torch.no_grad():
            return float((net(x) * weights).sum())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    scan = libprune.sensitivity(model, x, lambda: metric(model), ratios=[0.25, 0.5], importance="l2",
                                ignored_layers=[model[8]])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scan["ratios"] == [0.25, 0.5] and scan["baseline"] == pytest.approx(metric(model))
    assert [row["modules"] for row in scan["rows"]] == [["0", "1"], ["3", "4"]]
    for row in scan["rows"]:
        assert row["size"] == 32 and row["kept"] == [24, 16]
        for ratio, value in zip(scan["ratios"], row["metric"]):
            cut = copy.deepcopy(model)
            libprune.prune(cut, x, ratio=0.0, overrides={row["modules"][0]: ratio}, importance="l2",
                           ignored_layers=[cut[8]])
            assert value == pytest.approx(metric(cut), rel=1e-5)
            assert value != pytest.approx(scan["baseline"], rel=1e-3)
    # evaluate() raising: the error reaches the caller, the model is as it was
    calls = []

    def failing():  # the baseline and one masked point, then a failure with the mask on
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("no data")
        return metric(model)

    with pytest.raises(RuntimeError, match="no data"):
        libprune.sensitivity(model, x, failing)
    assert len(calls) == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="evaluate\\(\\) returned NoneType, not a number"):
        libprune.sensitivity(model, x, lambda: None)
    with pytest.raises(ValueError, match=r"sensitivity ratios.0 must be in \(0, 1\)"):
        libprune.sensitivity(model, x, lambda: 0.0, ratios=[1.5])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_allocation_sensitivity_cuts_where_the_scan_says_the_metric_drops_least():
    x = _x()
    scan = libprune.sensitivity(_net(), x, lambda: 90.0, ratios=[0.25, 0.5, 0.75], importance="l2",
                                ignored_layers=["8"])

    def widths(sensitive):  # the planted scan: `sensitive`'s group costs 5, 10, 20 points, the other 0.1, 0.2, 0.4
        planted = json.loads(json.dumps(scan))
        for row in planted["rows"]:
            d = 5.0 if row["modules"][0] == sensitive else 0.1
            row["metric"] = [90 - d, 90 - 2 * d, 90 - 4 * d]
        model = _net()
        plan = libprune.prune(model, x, target={"macs": 0.6}, allocation="sensitivity", sensitivity=planted,
                              importance="l2", ignored_layers=["8"])
        assert "allocated by sensitivity" in plan.notes[0]
        return model[0].out_channels, model[3].out_channels

    first, second = widths("0"), widths("3")
    assert first[0] == 32 and first[1] < 32
    assert second[1] == 32 and second[0] < 32
    with pytest.raises(ValueError, match="needs a sensitivity scan"):
        libprune.prune(_net(), x, target={"macs": 0.6}, allocation="sensitivity", ignored_layers=["8"])
    with pytest.raises(ValueError, match="read by allocation=\"sensitivity\" only"):
        libprune.prune(_net(), x, target={"macs": 0.6}, sensitivity=scan, ignored_layers=["8"])
    with pytest.raises(TypeError, match="sensitivity must be the dict"):
        libprune.prune(_net(), x, target={"macs": 0.6}, allocation="sensitivity", sensitivity="scan.json")
