"""Fixtures for the C++/torchvision parity test, made at test time (nothing binary is committed).

  parity_fixtures.py generate DIR   torchvision models with a fixed seed: weights + eval output
  parity_fixtures.py check DIR      the state_dicts the C++ side wrote back load in Python
"""
import os
import sys

import torch
import torchvision

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn"]


def build(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    # Non-trivial running statistics, so eval-mode parity also checks the BN buffers.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def generate(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name in MODELS:
        model = build(name)
        torch.manual_seed(1)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            y = model(x)
        torch.save(dict(model.state_dict()), os.path.join(out_dir, f"{name}.pt"))
        torch.save({"input": x, "output": y}, os.path.join(out_dir, f"{name}.io.pt"))
        print(f"{name}: {sum(p.numel() for p in model.parameters())} params, output {tuple(y.shape)}")


def check(out_dir):
    for name in MODELS:
        path = os.path.join(out_dir, f"{name}.from_cpp.pt")
        state = torch.load(path)
        assert isinstance(state, dict), f"{path}: torch.load returned {type(state).__name__}, expected dict"
        reference = build(name).state_dict()
        assert set(state) == set(reference), f"{path}: keys differ: {set(state) ^ set(reference)}"
        for key, value in reference.items():
            assert torch.equal(state[key], value), f"{path}: {key} differs after the C++ round trip"
        model = getattr(torchvision.models, name)()
        model.load_state_dict(state, strict=True)
        io = torch.load(os.path.join(out_dir, f"{name}.io.pt"))
        with torch.no_grad():
            y = model.eval()(io["input"])
        err = (y - io["output"]).abs().max().item()
        assert err < 1e-4, f"{name}: output differs by {err} after loading the C++ state_dict"
        print(f"{name}: C++ state_dict loads in Python, max abs diff {err:.2e}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("generate", "check"):
        sys.exit("usage: parity_fixtures.py generate|check DIR")
    generate(sys.argv[2]) if sys.argv[1] == "generate" else check(sys.argv[2])
