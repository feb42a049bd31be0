"""Post-training int8 of a trained ResNet-50: libprune (Python path) against torch.ao FX, side by side.

No pretrained ResNet-50 can be installed here, so the model is the one
`build/libprune-run configs/fashion_mnist_resnet50_ptq.json` trains (torchvision's ResNet-50 with a
1-channel stem, 2 epochs on Fashion-MNIST). This script loads that run's checkpoint into
torchvision's resnet50, calibrates each tool on the same 8 training batches, and prints, over the
10,000 test images (none of them calibration images): top-1, argmax agreement and mean logit
cosine against the float model, for torch.ao's default oneDNN mapping (histogram observer) and
libprune's min-max, percentile and mse observers (fake-quantised and converted to int8 kernels).
Then mixed precision: libprune.quantize.sensitivity ranks the units by the argmax agreement each
costs alone at 8 bits, on 2,000 training images that neither calibrate nor test (so no test image
chooses), and the min-max int8 model is rebuilt with the 1 to --keep-float worst units kept float.

    PYTHONPATH=build/python /usr/bin/python3 scripts/bench_resnet50_ptq.py [--run runs/fashion_mnist_resnet50_ptq]
"""
import argparse
import copy
import gzip

import numpy as np
import torch
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import libprune.quantize as lq


def images(path, labels=False):
    raw = gzip.open(path).read()
    data = np.frombuffer(raw, dtype=np.uint8, offset=8 if labels else 16).copy()
    if labels:
        return torch.from_numpy(data).long()
    return torch.from_numpy(data).reshape(-1, 1, 28, 28).float().div(255).sub(0.2860).div(0.3530)


def logits(model, x):
    with torch.no_grad():
        return torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/fashion_mnist_resnet50_ptq")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-float", type=int, default=6, help="mixed-precision rows: keep the 1..N worst units float")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "onednn"
    train = images(f"{args.data}/train-images-idx3-ubyte.gz")
    test = images(f"{args.data}/t10k-images-idx3-ubyte.gz")
    labels = images(f"{args.data}/t10k-labels-idx1-ubyte.gz", labels=True)
    calibration = [train[i * 128:(i + 1) * 128] for i in range(8)]

    model = torchvision.models.resnet50(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    ckpt = torch.jit.load(f"{args.run}/last.ckpt")
    tensors = dict(ckpt.named_buffers())
    tensors.update(dict(ckpt.named_parameters()))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    model.eval()
    ref = logits(model, test)

    def row(name, out):
        top1 = (out.argmax(1) == labels).float().mean().item() * 100
        agree = (out.argmax(1) == ref.argmax(1)).float().mean().item() * 100
        cos = torch.nn.functional.cosine_similarity(out, ref, dim=1).mean().item()
        print(f"| {name} | {top1:.2f}% | {agree:.2f}% | {cos:.4f} |", flush=True)

    print("| model | top-1 | argmax agreement with fp32 | logit cosine |\n| --- | --- | --- | --- |")
    row("fp32", ref)
    with torch.no_grad():
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("onednn"), (train[:2],))
        for b in calibration:
            prepared(b)
    row("torch.ao FX int8 (histogram observer)", logits(convert_fx(prepared), test))
    for observer, extra in [("min_max", {}), ("percentile", {"percentile": 99.99}), ("percentile", {"percentile": 99.9}),
                            ("mse", {})]:
        m = copy.deepcopy(model)
        lq.prepare_qat(m, train[:2], observer=observer, **extra)
        lq.calibrate(m, calibration)
        label = observer + (f" {extra['percentile']}" if extra else "")
        row(f"libprune {label}, fake-quantised", logits(m, test))
        lq.convert(m)
        row(f"libprune {label}, int8 kernels", logits(m, test))
    mixed(model, train, calibration, args.keep_float, row, test)


def mixed(model, train, calibration, most, row, test):
    """Mixed-precision rows: the units the scan finds worst at 8 bits kept float, 1 to `most` of them."""
    select = train[20000:22000]  # neither calibration (the first 1,024) nor test images
    chosen = logits(model, select).argmax(1)
    scan = lq.sensitivity(model, train[:2], calibration,
                          lambda: (logits(model, select).argmax(1) == chosen).float().mean().item() * 100, bits=[8])
    worst = sorted(scan["rows"], key=lambda r: r["metric"][0])
    print(f"\nscan: {len(worst)} units in {scan['seconds']:.0f} s; agreement on the selection images with every unit "
          f"at 8 bits {scan['all'][0]:.2f}%; worst alone: " +
          ", ".join(f"{r['unit']} {r['metric'][0]:.2f}%" for r in worst[:most]) + "\n", flush=True)
    print("| units kept float | top-1 | argmax agreement with fp32 | logit cosine |\n| --- | --- | --- | --- |")
    for k in range(1, most + 1):
        m = copy.deepcopy(model)
        keep = [r["unit"].split(" -> ")[0] for r in worst[:k]]
        lq.prepare_qat(m, train[:2], observer="min_max", keep_float=keep)
        lq.calibrate(m, calibration)
        lq.convert(m)
        row(f"{k}: {', '.join(keep)}", logits(m, test))


if __name__ == "__main__":
    main()
