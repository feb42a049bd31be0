"""Mixed precision in Python: prepare_qat(..., keep_float=[...]) keeps named units float through
calibration, convert, save_int8 and load_int8 (which reads the kept units from the file)."""
import pytest
import torch
import torchvision

import libprune.quantize as lq


def _resnet(seed):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=10).eval()


def _int8_layers(sd):
    return {n.split(".int8.")[0] for n in sd if ".int8." in n}


def test_keep_float_keeps_the_named_units_float_through_convert_and_the_deploy_file(tmp_path):
    x = torch.randn(32, 3, 32, 32)
    model = _resnet(0)
    # A unit is named by any of its layers: the stem by its ReLU, one by its batch norm, the fc by itself.
    units = lq.prepare_qat(model, x[:2], keep_float=["relu", "layer3.0.bn2", "fc"])
    assert len(units) == 21 - 3 and "fc" not in units and "conv1 -> relu" not in units
    for layer in ("conv1", "layer3.0.conv2", "fc"):
        assert not hasattr(model.get_submodule(layer), "weight_fake_quant"), layer
    assert hasattr(model.layer3[0].conv1, "weight_fake_quant")
    lq.calibrate(model, [x])
    with torch.no_grad():
        simulated = model(x)
    report = lq.convert(model)
    assert len(report["quantized"]) == 18
    assert "conv1 + bn1 + relu: kept in float by keep_float (mixed precision)" in report["skipped"]
    assert "fc: kept in float by keep_float (mixed precision)" in report["skipped"]
    with torch.no_grad():
        int8 = model(x)
    assert torch.nn.functional.cosine_similarity(int8.flatten(), simulated.flatten(), dim=0) > 0.999  # as without

    path = str(tmp_path / "mixed_int8.pt")
    lq.save_int8(model, path)
    sd = torch.load(path)
    assert {"conv1", "layer3.0.conv2", "fc"}.isdisjoint(_int8_layers(sd)) and len(_int8_layers(sd)) == 18
    assert "conv1.weight" in sd and "bn1.running_var" in sd and "fc.weight" in sd and "layer3.0.bn2.weight" in sd
    assert "layer3.0.conv1.weight" not in sd
    fresh = _resnet(1)
    assert len(lq.load_int8(fresh, x[:2], path)) == 18
    with torch.no_grad():
        assert torch.equal(fresh(x), int8)


def test_keep_float_bad_names_and_keeping_every_unit_are_refused_leaving_the_model():
    x = torch.randn(2, 3, 32, 32)
    model = _resnet(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    every = [u.split(" -> ")[0] for u in lq.prepare_qat(_resnet(2), x)]
    for keep, says in ((["conv1", "layer9.conv"], r"keep_float names 'layer9\.conv'.*21 units: conv1, layer1\.0\.conv1.*Fix:"),
                       (every, r"keeps all 21 units float, so nothing would be quantised\. Fix:")):
        with pytest.raises(ValueError, match=says):
            lq.prepare_qat(model, x, keep_float=keep)
        assert not lq.quantisers(model) and not hasattr(model, "_libprune_qat")
        assert model.state_dict().keys() == before.keys()
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Only units that would convert count: a 'same'-padded conv stays float anyway.
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding="same"), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 32 * 32, 5))
    with pytest.raises(ValueError, match="keeps all 1 units float"):
        lq.prepare_qat(net, x, keep_float=["3"])
