"""Budgeted pruning from Python: latency tables of nn.Modules, MACs and latency targets."""
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


def test_latency_table_measures_once_then_reuses_its_cache(tmp_path):
    model, x = _net(), _x()
    table = libprune.latency_table(model, x, runs=3, warmup=1, cache_dir=str(tmp_path))
    assert table.layers == ["0.weight", "3.weight", "8.weight", "0.weight:relu.0", "3.weight:relu.0"]
    # the layers' grids, then the first ReLU's widths; the second ReLU has its shape
    assert table.entries_measured == 4 + 16 + 4 * 3 + 4 and table.entries_reused == 4
    assert table.dense_ms > 0 and table.cache_file.startswith(str(tmp_path))
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
    assert 0.65 * dense < libprune.count_ops(model, x).macs <= 0.75 * dense
    pruner.step(progress=1)
    assert 0.4 * dense < libprune.count_ops(model, x).macs <= 0.5 * dense
    assert model(x).shape == (2, 10)


def test_latency_target_with_a_table(tmp_path):
    model, x = _net(), _x()
    table = libprune.latency_table(model, x, runs=3, warmup=1, cache_dir=str(tmp_path))
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
