import pytest
import torch
import torchvision

import libprune


def _x(n=2, size=64):
    torch.manual_seed(0)
    return torch.randn(n, 3, size, size)


def test_prune_resnet18_updates_modules_and_shrinks():
    model = torchvision.models.resnet18(num_classes=10)
    x = _x()
    macs_before, params_before = libprune.count_ops(model, x)
    plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[model.fc])
    assert not plan.empty() and plan.verification_pins == []
    assert model.conv1.out_channels == 32 and model.conv1.weight.shape[0] == 32
    assert model.bn1.num_features == 32 and model.bn1.running_var.shape == (32,)
    assert model.layer4[1].conv2.out_channels == 256
    assert model.fc.in_features == 256 and model.fc.out_features == 10
    macs, params = libprune.count_ops(model, x)
    assert macs < 0.3 * macs_before and params < 0.3 * params_before
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)


def test_dependency_graph_groups_and_explain():
    model = torchvision.models.resnet18()
    graph = libprune.DependencyGraph(model, _x())
    assert len(graph.groups) == 14
    stem = next(g for g in graph.groups if ("conv1.weight", 0) in g.members)
    assert stem.size == 64 and not stem.pinned
    assert ("layer2.0.downsample.0.weight", 1) in stem.members
    pinned = [g for g in graph.groups if g.pinned]
    assert any("model output" in g.reason for g in pinned)
    assert "PINNED" in graph.explain()


def test_prune_mid_training_with_adamw_keeps_the_optimizer():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = _x(16, 32), torch.randint(0, 10, (16,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train(steps):
        model.train()
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        return loss.item()

    train(5)
    libprune.prune(model, x[:2], ratio=0.3, ignored_layers=[model.fc], optimizer=opt)
    for p in model.parameters():
        state = opt.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg_sq"].shape == p.shape
    right_after = train(1)
    later = train(10)
    assert later < right_after


def test_plan_json_replay_and_weights_load():
    model = torchvision.models.resnet18(num_classes=10)
    x = _x()
    plan = libprune.prune(model, x, ratio=0.5, ignored_layers=[model.fc], round_to=8)
    text = plan.to_json()
    fresh = torchvision.models.resnet18(num_classes=10)
    libprune.apply_plan(fresh, x, libprune.Plan.from_json(text))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), fresh.eval()(x))
    assert all(len(keep) % 8 == 0 for name, dim, size, keep in plan.cuts if name.endswith(".weight") and dim == 0)


def _unchanged(model, before):
    after = model.state_dict()
    return all(before[k].shape == after[k].shape and torch.equal(before[k], after[k]) for k in before)


def test_prune_bad_input_is_a_clear_error_and_changes_nothing():
    model = torchvision.models.resnet18(num_classes=10)
    x = _x()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        libprune.prune(model, x, ratio=1.0)
    with pytest.raises(ValueError, match=r"unknown importance \"l3\""):
        libprune.prune(model, x, importance="l3")
    with pytest.raises(ValueError, match="not in the model"):
        libprune.prune(model, x, ignored_layers=[torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="forward failed on the example inputs"):
        libprune.prune(model, torch.randn(2, 1, 64, 64))
    other = torchvision.models.resnet18(num_classes=10)
    with pytest.raises(ValueError, match="optimizer does not hold parameter"):
        libprune.prune(model, x, ignored_layers=[model.fc], optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    foreign_plan = libprune.prune(torchvision.models.mobilenet_v2(), x, ratio=0.5)
    with pytest.raises(ValueError, match="recorded on another model"):
        libprune.apply_plan(model, x, foreign_plan)
    with pytest.raises(ValueError, match="libprune.plan/1"):
        libprune.Plan.from_json('{"cuts": []}')
    assert _unchanged(model, before)
    assert model.conv1.out_channels == 64
