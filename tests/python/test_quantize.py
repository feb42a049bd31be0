import pytest
import torch
import torchvision
from torch.ao.quantization import FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver
from torch.ao.quantization import MovingAveragePerChannelMinMaxObserver

import libprune
import libprune.quantize as lq


def _sequence(shape, steps=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (1 + i) + 0.25 * i for i in range(steps)]


def _channels_last(x, i):
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and i % 2 else x


def test_activation_quantiser_equals_torch_ao_fused_bit_for_bit():
    ours = lq.FakeQuantize("activation")
    ref = FusedMovingAvgObsFakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    for i, x in enumerate(_sequence((4, 8, 5, 5))):
        x = _channels_last(x, i)
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        ya, yb = ours(a), ref(b)
        assert torch.equal(ya, yb), i
        assert torch.equal(ours.scale, ref.scale) and torch.equal(ours.zero_point, ref.zero_point), i
        assert torch.equal(ours.min_val, ref.activation_post_process.min_val), i
        assert torch.equal(ours.max_val, ref.activation_post_process.max_val), i
        g = torch.randn_like(ya)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        assert torch.equal(a.grad, b.grad), i


def test_weight_quantiser_equals_torch_ao_fused_per_channel_bit_for_bit():
    ours = lq.FakeQuantize("weight", channels=6)
    ref = FusedMovingAvgObsFakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    for i, w in enumerate(_sequence((6, 3, 3, 3), seed=1)):
        a = w.clone().requires_grad_(True)
        b = w.clone().requires_grad_(True)
        ya, yb = ours(a), ref(b)
        assert torch.equal(ya, yb), i
        assert torch.equal(ours.scale, ref.scale) and torch.equal(ours.zero_point, ref.zero_point), i
        (ya.sum() + yb.sum()).backward()
        assert torch.equal(a.grad, b.grad), i


def test_a_percentile_observer_clips_a_rare_outlier():
    x = torch.randn(65536)
    x[7] = 1000.0
    wide, clipped = lq.FakeQuantize(observer="min_max"), lq.FakeQuantize(observer="percentile", percentile=99.99)
    wide(x)
    clipped(x)
    assert float(wide.max_val) == 1000.0 and 3.0 < float(clipped.max_val) < 5.0


def test_an_mse_observer_clips_a_heavy_tail_where_that_lowers_the_rounding_error():
    torch.manual_seed(5)
    x = torch.distributions.Laplace(0.0, 1.0).sample((65536,))
    errors = {}
    for observer in ("min_max", "mse"):
        q = lq.FakeQuantize(observer=observer, bits=4)
        errors[observer] = float((q(x) - x).pow(2).sum())
    assert 3.0 < float(q.max_val) < 8.0 and -8.0 < float(q.min_val) < -3.0  # the mse observer's range
    assert errors["mse"] < 0.6 * errors["min_max"]


def test_quantize_per_tensor_gives_torchs_integers():
    x = torch.randn(2, 3, 5, 5) * 4
    x.view(-1)[:3] = torch.tensor([0.25, 0.75, 1e6])  # ties and a value beyond the grid
    x = x.contiguous(memory_format=torch.channels_last)
    ours = libprune._libprune._quantize_per_tensor(x, 0.5, 100)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ours.int_repr(), torch.quantize_per_tensor(x, 0.5, 100, torch.quint8).int_repr())


def test_the_models_output_is_not_rounded_in_simulation_or_in_int8():
    model, x = _model(), torch.randn(64, 3, 32, 32)
    model.eval()
    lq.prepare_qat(model, x[:2])
    assert not hasattr(model.fc, "output_fake_quant") and hasattr(model.layer4[1].conv2, "weight_fake_quant")
    lq.calibrate(model, [x])
    lq.convert(model)
    with torch.no_grad():
        logits = model(x)
    assert logits.unique().numel() > 256  # 640 logits: a 256-step grid would hold at most 256 values


def test_observers_watch_in_training_mode_only():
    q = lq.FakeQuantize("activation")
    q(torch.randn(100))
    seen = (q.min_val.clone(), q.max_val.clone())
    q.eval()
    q(torch.randn(100) * 50)
    assert torch.equal(q.min_val, seen[0]) and torch.equal(q.max_val, seen[1])


def _model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def test_prepare_qat_keeps_names_and_parameters_trains_and_prunes():
    model = _model()
    x = torch.randn(4, 3, 32, 32)
    params = {n: p for n, p in model.named_parameters()}
    keys = set(model.state_dict())
    units = lq.prepare_qat(model, x[:1])
    # 20 convolutions and the fc; BasicBlock calls its one ReLU module twice, so its units end at the norms.
    assert len(units) == 21
    assert "conv1 -> relu" in units and "layer1.0.conv1 -> layer1.0.bn1" in units and "fc" in units
    assert {n: p for n, p in model.named_parameters()} == params  # the same names, the same objects
    assert keys < set(model.state_dict())
    assert model.state_dict()["layer1.0.conv1.weight_fake_quant.scale"].shape == (64,)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    y = torch.randint(0, 10, (4,))
    for _ in range(2):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and model.conv1.weight.grad.abs().sum() > 0
    assert torch.isfinite(model.layer1[0].conv1.weight_fake_quant.min_val).all()
    # Pruning a prepared model: the per-channel quantiser state is cut with its channels.
    plan = libprune.prune(model, x[:1], ratio=0.5, ignored_layers=[model.fc], optimizer=opt)
    assert not plan.empty()
    conv = model.layer1[0].conv1
    assert conv.weight.shape[0] < 64
    for t in ("scale", "zero_point", "min_val", "max_val"):
        assert getattr(conv.weight_fake_quant, t).shape == (conv.weight.shape[0],), t
    model.train()
    torch.nn.functional.cross_entropy(model(x), y).backward()


def test_calibrate_then_the_simulated_model_tracks_the_float_one():
    model = _model()
    torch.nn.init.normal_(model.fc.weight, std=0.1)
    x = torch.randn(16, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        reference = model(x)
    lq.prepare_qat(model, x[:1])
    lq.calibrate(model, [x[:8], x[8:]])
    assert not model.training
    with torch.no_grad():
        simulated = model(x)
    assert not torch.equal(simulated, reference)
    cos = torch.nn.functional.cosine_similarity(simulated.flatten(), reference.flatten(), dim=0)
    assert cos > 0.98


def test_bad_input_names_the_option_and_leaves_the_model():
    model = _model()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="bits"):
        lq.prepare_qat(model, x, bits=9)
    with pytest.raises(ValueError, match="observer"):
        lq.prepare_qat(model, x, observer="histogram")
    with pytest.raises(TypeError, match="unexpected keyword"):
        lq.prepare_qat(model, x, bitz=8)
    assert not lq.quantisers(model)
    with pytest.raises(ValueError, match="no fake quantisers"):
        lq.calibrate(model, [x])
    with pytest.raises(ValueError, match="role"):
        lq.FakeQuantize("bias")
    lq.prepare_qat(model, x)
    with pytest.raises(ValueError, match="already has fake quantisers"):
        lq.prepare_qat(model, x)


def _int8_resnet20(sd, x):
    """CIFAR ResNet-20 in int8 from libprune's deploy file alone, on torch.ops.quantized (oneDNN)."""
    def requant(t, name, k=0):
        q = sd[name + ".qparams"]  # output scale, zero point, dequantized?, then (scale, zero point) per input
        if q[3 + 2 * k] == 0:  # no quantiser of its own: int8 from the layer before
            return t
        f = t.dequantize() if t.is_quantized else t
        return torch.quantize_per_tensor(f, float(q[3 + 2 * k]), int(q[4 + 2 * k]), torch.quint8)

    def out(name):
        q = sd[name + ".qparams"]
        return float(q[0]), int(q[1])

    def conv(layer, t, stride, relu):
        name = layer + ".int8"
        w, s = sd[name + ".weight"], sd[name + ".weight_scale"]
        qw = torch._make_per_channel_quantized_tensor(w, s.double(), torch.zeros(len(s), dtype=torch.long), 0)
        k = w.shape[-1]
        packed = torch.ops.quantized.conv2d_prepack(qw.contiguous(memory_format=torch.channels_last),
                                                    sd.get(name + ".bias"), [stride, stride], [k // 2, k // 2], [1, 1], 1)
        op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        return op(requant(t, name).contiguous(memory_format=torch.channels_last), packed, *out(name))

    t = conv("conv1", x, 1, True)
    for stage in (1, 2, 3):
        for block in range(3):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = conv(p + ".conv2", conv(p + ".conv1", t, stride, True), 1, False)
            identity = conv(p + ".downsample.0", t, stride, False) if p + ".downsample.0.int8.weight" in sd else t
            a, b = requant(y, p + ".add.int8"), requant(identity, p + ".add.int8", 1)
            if out(p + ".add.int8")[0] == 0:  # output scale 0: no layer reads it (a functional pooling does)
                t = (a.dequantize() + b.dequantize()).clamp_min(0)
            else:
                t = torch.ops.quantized.add_relu(a, b, *out(p + ".add.int8"))
    assert out("layer3.2.add.int8")[0] == 0 and out("fc.int8")[0] == 0
    t = torch.nn.functional.adaptive_avg_pool2d(t, 1).flatten(1)
    w, s = sd["fc.int8.weight"], sd["fc.int8.weight_scale"]
    qw = torch._make_per_channel_quantized_tensor(w, s.double(), torch.zeros(len(s), dtype=torch.long), 0)
    # The logits leave unrounded: the int8 input and weight, dequantised, in float.
    return torch.nn.functional.linear(requant(t, "fc.int8").dequantize(), qw.dequantize(), sd["fc.int8.bias"])


def test_the_int8_deploy_file_runs_on_torch_ops_quantized_bit_for_bit(tmp_path):
    from libprune import _libprune_dev
    torch.manual_seed(0)
    calib, x = torch.randn(32, 1, 28, 28), torch.randn(8, 1, 28, 28)
    path = str(tmp_path / "model_int8.pt")
    ours = _libprune_dev.int8_zoo_model("cifar_resnet20", path, calib, x)
    sd = torch.load(path)
    assert sd["conv1.int8.weight"].dtype == torch.int8 and "layer1.0.bn1.weight" not in sd  # folded away
    torch.backends.quantized.engine = "onednn"
    theirs = _int8_resnet20(sd, x)
    assert torch.equal(ours, theirs)
    assert ours.abs().sum() > 0


def test_save_int8_then_load_int8_rebuilds_the_int8_model_bit_for_bit(tmp_path):
    x = torch.randn(32, 3, 32, 32)
    model = _model().eval()
    lq.prepare_qat(model, x[:2])
    lq.calibrate(model, [x])
    lq.convert(model)
    with torch.no_grad():
        expected = model(x)
    path = str(tmp_path / "model_int8.pt")
    lq.save_int8(model, path)
    sd = torch.load(path)
    assert sd["conv1.int8.weight"].dtype == torch.int8 and "conv1.weight" not in sd and "bn1.weight" not in sd
    assert float(sd["fc.int8.qparams"][0]) == 0  # the logits leave in float, as C++ writes it
    torch.manual_seed(1)
    fresh = torchvision.models.resnet18(num_classes=10).eval()  # other float weights: the file's replace them
    lq.load_int8(fresh, x[:2], path)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
    # A file of another model: refused naming the tensor, the model left float and unchanged.
    other = torchvision.models.resnet18(num_classes=100).eval()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with torch.no_grad():
        y = other(x)
    with pytest.raises(ValueError, match=r"fc\.int8\.weight.*Fix:"):
        lq.load_int8(other, x[:2], path)
    assert not lq.quantisers(other) and not hasattr(other, "_libprune_qat") and "forward" not in other.conv1.__dict__
    assert other.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    with torch.no_grad():
        assert torch.equal(other(x), y)
    with pytest.raises(ValueError, match="not converted"):
        lq.save_int8(other, path)
