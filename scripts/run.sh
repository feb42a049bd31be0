#!/usr/bin/env bash
# README command (1): install what is missing, build, then run the main job: the embedded default
# recipe (CIFAR-style ResNet-20 on Fashion-MNIST from Debian's dataset-fashion-mnist: train dense,
# prune 50% of the filters on an AGP schedule, fine-tune), printing dense against pruned.
# Arguments go to the runner, e.g. --set output_dir=runs/x, --resume.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Only the runner and the library: the tests and bindings are built by the test command.
LIBPRUNE_TARGETS=libprune-run bash scripts/build.sh >/dev/null
exec ./build/libprune-run configs/fashion_mnist_resnet20_filters50.json "$@"
