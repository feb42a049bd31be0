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


def _criteria_model():
    """The C++ criteria test's model (tests/cpp/test_criteria.cpp has the worked scores)."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[2.5, 0, 0], [1, 1, 1], [0.9, 0.9, 0.9], [0.2, 0.2, 0.2]]))
        net[0].bias.zero_()
        net[1].weight.copy_(torch.tensor([0.1, 0.2, 1.0, 0.9]))
        net[1].bias.zero_()
        net[3].weight.copy_(torch.tensor([[0.01, 0.04, 0.02, 0.03], [0, 0, 0, 0]]))
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net[0].weight.grad[1] = 1.0
    net[0].weight.grad[3] = 10.0
    return net


@pytest.mark.parametrize("criterion,keep", [("l1", [1, 2]), ("l2", [0, 2]), ("bn_scale", [2, 3]), ("fpgm", [0, 3]),
                                            ("lamp", [0, 1]), ("taylor", [1, 3])])
def test_each_criterion_keeps_the_channels_it_ranks_highest(criterion, keep):
    net = _criteria_model()
    plan = libprune.prune(net, torch.randn(8, 3), ratio=0.5, importance=criterion, ignored_layers=[net[3]])
    assert {(n, d): k for n, d, _, k in plan.cuts}[("0.weight", 0)] == keep
    assert torch.equal(net[1].weight.detach(), torch.tensor([0.1, 0.2, 1.0, 0.9])[keep])


@pytest.mark.parametrize("make", [lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
                                  lambda ps: torch.optim.Adam(ps, lr=1e-3),
                                  lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01)],
                         ids=["sgd", "adam", "adamw"])
def test_a_cut_keeps_optimizer_state_and_grads_by_value(make):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = make(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    before = {n: {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v) and v.dim() > 0}
              for n, p in params.items()}
    grads = {n: p.grad.clone() for n, p in params.items()}
    plan = libprune.prune(model, x[:1], ratio=0.5, ignored_layers=[model.fc], optimizer=opt)

    def cut(t, name):
        for n, d, _, keep in plan.cuts:
            if n == name:
                t = t.index_select(d, torch.tensor(keep))
        return t
    changed = 0
    for n, p in model.named_parameters():
        assert before[n], n
        for k, v in before[n].items():
            assert opt.state[p][k].dtype == v.dtype and torch.equal(opt.state[p][k], cut(v, n)), (n, k)
        assert torch.equal(p.grad, cut(grads[n], n)), n
        changed += p.shape != grads[n].shape
    assert changed > 20


class _HardCoded(torch.nn.Module):
    """Its own code fixes one width: the view needs 8 channels of `b`."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 1)
        self.b = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8 * 16, 5)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.a(x))).view(x.shape[0], 8 * 16))


def test_groups_pinned_by_verification_show_in_explain_with_the_reason():
    model, x = _HardCoded(), torch.randn(2, 3, 4, 4)
    pruner = libprune.Pruner(model, x, ratio=0.5, ignored_layers=[model.fc])
    plan = pruner.step()
    assert model.a.weight.shape[0] == 4 and model.b.weight.shape[0] == 8
    assert len(plan.verification_pins) == 1 and plan.verification_pins[0].startswith("b.weight")
    assert "verification: the forward failed" in pruner.graph().explain()
    assert model(x).shape == (2, 5)


def test_a_failure_inside_the_cut_puts_every_tensor_and_attribute_back():
    # A head adapter that fails once, on a layer in the middle of the model: every layer before it has
    # had its tensors cut and its attributes updated when the failure comes.
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    momentum = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    attributes = {n: (m.in_channels, m.out_channels) if isinstance(m, torch.nn.Conv2d) else m.num_features
                  for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))}
    failed = []

    def fails_once(m):
        if m is model.layer3[0].conv1 and not failed:
            failed.append(m)
            raise RuntimeError("adapter failed on purpose")
        return False
    libprune.register_head_adapter(fails_once)
    try:
        with pytest.raises(RuntimeError, match="on purpose"):
            libprune.prune(model, x[:1], ratio=0.5, ignored_layers=[model.fc], optimizer=opt)
    finally:
        libprune._layers.HEAD_ADAPTERS.remove(fails_once)
    assert failed
    assert all(torch.equal(v, tensors[k]) for k, v in model.state_dict().items())
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]) and torch.equal(opt.state[p]["momentum_buffer"], momentum[n]), n
    assert attributes == {n: (m.in_channels, m.out_channels) if isinstance(m, torch.nn.Conv2d) else m.num_features
                          for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))}
    assert model(x).shape == (4, 10)
    assert not libprune.prune(model, x[:1], ratio=0.5, ignored_layers=[model.fc], optimizer=opt).empty()
