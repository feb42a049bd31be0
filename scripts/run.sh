#!/usr/bin/env bash
# README command (1): install what is missing, build, then run the main job: the embedded default
# recipe (CIFAR-style ResNet-20 on Fashion-MNIST from Debian's dataset-fashion-mnist: train dense,
# prune 50% of the filters on an AGP schedule, fine-tune, quantization-aware training, int8),
# printing dense / pruned / int8 / pruned+int8, then the report page.
# Arguments go to the runner, e.g. --set output_dir=runs/x, --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Only the runner and the library: the tests and bindings are built by the test command.
LIBPRUNE_TARGETS=libprune-run bash scripts/build.sh >/dev/null
./build/libprune-run configs/fashion_mnist_resnet20_hybrid.json "$@"
# The report page needs only the standard library and matplotlib, so it runs from the source folder.
out=runs/fashion_mnist_resnet20_hybrid
for a in "$@"; do
  case "$a" in output_dir=*) out=${a#output_dir=} ;; --set=output_dir=*) out=${a#--set=output_dir=} ;; esac
done
/usr/bin/python3 bindings/libprune/report.py "$out"
