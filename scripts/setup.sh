#!/usr/bin/env bash
# Installs the Debian packages libprune needs, only those that are missing, so a second run
# changes nothing. Works on a minimal Debian bookworm that has only git (run as root or with sudo).
#   bash scripts/setup.sh                 # what the build, the tests and the runs need
#   bash scripts/setup.sh --sanitizers    # also clang and its runtimes (scripts/fuzz.sh, scripts/tsan.sh)
set -euo pipefail

PACKAGES=(
  # toolchain and the interpreter the bindings are built for
  build-essential cmake ninja-build python3 python3-dev
  # LibTorch (C++) and Debian's torch for /usr/bin/python3, torchvision for tests and interop
  libtorch-dev python3-torch python3-torchvision
  # an optimised BLAS for LibTorch's matrix products (without it they run on reference BLAS)
  libopenblas0-openmp
  # libraries: image decoding, formatting, JSON, tests, bindings, gzip for the IDX files
  libopencv-dev libfmt-dev nlohmann-json3-dev catch2 pybind11-dev zlib1g-dev
  # data and the Python test runner
  dataset-fashion-mnist python3-pytest
  # type checks of the Python stubs (mypy and its stubtest)
  python3-mypy
  # the run report page's figures (python3 -m libprune.report)
  python3-matplotlib
  # text models: SentencePiece tokenizers (C++ and Python) and WordNet's labelled nouns
  libsentencepiece-dev python3-sentencepiece wordnet-base
  # many processes: c10d's Gloo backend is in LibTorch, Gloo's headers are not
  libgloo-dev
)
if [ "${1:-}" = "--sanitizers" ]; then
  # libFuzzer, AddressSanitizer and ThreadSanitizer come with clang's runtime libraries
  PACKAGES+=(clang libclang-rt-dev)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
