import pytest
import torch
import torchvision

import libprune
from libprune import _libprune_dev


def test_import_and_version():
    assert libprune.__version__.count(".") == 2
    names = libprune.model_names()
    assert "resnet50" in names and "cifar_resnet20" in names and "mobilenet_v2" in names


@pytest.mark.parametrize("name,macs,params", [
    ("resnet18", 1_814_073_344, 11_689_512),
    ("resnet50", 4_089_184_256, 25_557_032),
])
def test_count_ops_torchvision(name, macs, params):
    model = getattr(torchvision.models, name)()
    result = libprune.count_ops(model, torch.randn(1, 3, 224, 224))
    got_macs, got_params = result
    assert got_macs == macs
    assert got_params == params
    assert result.matmul_macs == 0
    assert result.unknown_ops == {}
    assert any(layer.name == "fc" and layer.op == "linear" for layer in result.layers)


def test_count_ops_custom_module_and_attention_matmul():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 48)
            self.out = torch.nn.Linear(16, 4)

        def forward(self, x):  # x: [batch, tokens, 16]
            q, k, v = self.proj(x).chunk(3, dim=-1)
            attn = (q @ k.transpose(1, 2)).softmax(-1)
            return {"logits": self.out(attn @ v).mean(1)}

    result = libprune.count_ops(Net(), torch.randn(2, 5, 16))
    assert result.macs == 2 * 5 * 16 * 48 + 2 * 5 * 16 * 4
    assert result.matmul_macs == 2 * (5 * 5 * 16) * 2
    assert result.params == 16 * 48 + 48 + 16 * 4 + 4


def test_count_ops_wrong_shape_is_a_clear_error_and_changes_nothing():
    model = torchvision.models.resnet18()
    model.train()
    model.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        libprune.count_ops(model, torch.randn(1, 1, 32, 32))
    msg = str(err.value)
    assert "forward failed on the example inputs" in msg
    assert "[1, 1, 32, 32]" in msg
    assert "Fix:" in msg
    assert model.training and model.layer1.training
    assert not model.fc.bias.requires_grad and model.fc.weight.requires_grad
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_count_ops_does_not_touch_bn_statistics():
    model = torchvision.models.resnet18().train()
    before = model.bn1.running_mean.clone()
    libprune.count_ops(model, torch.randn(2, 3, 64, 64))
    assert torch.equal(model.bn1.running_mean, before)
    assert model.conv1.weight.grad is None


def test_count_ops_bad_arguments():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        libprune.count_ops("resnet18", torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="example_inputs"):
        libprune.count_ops(torch.nn.Linear(2, 2), 3)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                  "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "vgg16_bn",
                                  "mobilenet_v2"])
def test_zoo_state_dict_keys_match_torchvision(name):
    reference = {k: list(v.shape) for k, v in getattr(torchvision.models, name)().state_dict().items()}
    ours = _libprune_dev.zoo_state_shapes(name)
    assert set(ours) == set(reference)
    assert ours == reference


def test_unknown_zoo_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model \"resnet51\"; expected one of .*resnet50"):
        _libprune_dev.zoo_state_shapes("resnet51")
