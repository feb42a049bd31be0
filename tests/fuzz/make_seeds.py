"""Writes the seed inputs the fuzz corpora started from (run once; the corpora in tests/fuzz/corpus
keep them, with what the fuzzers added).

    python3 tests/fuzz/make_seeds.py BUILD_DIR OUT_DIR

The C++ seeds (checkpoints, a libprune state_dict, plans, IDX, CIFAR) come from
`libprune_fuzz_replay --seeds`; this adds what Python writes: a torch.save state_dict of the same
tiny model, gzipped IDX files, the shipped recipes from configs/, and archives holding pickles
LibTorch mishandles (crash-pickle-*: regressions for the archive check).
"""
import gzip
import pathlib
import zipfile
import shutil
import subprocess
import sys

import torch
from torch import nn


def tiny_model():
    # The architecture of fuzz::tiny_model() in tests/fuzz/common.cpp, with the same names.
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def idx_input(flags, images, labels):
    if flags & 1:
        images = gzip.compress(images, mtime=0)
    if flags & 2:
        labels = gzip.compress(labels, mtime=0)
    return bytes([flags, len(images) & 255, len(images) >> 8]) + images + labels


# Pickles LibTorch 1.13's unpickler mishandles (it allocates what a length says, pops empty stacks,
# reads unset memo slots, sizes its memo table by the largest index: 2^31 here, 32 GB); libprune's archive check must refuse each before LibTorch reads it.
BAD_PICKLES = {
    "length": b"\x80\x02X\xff\xff\xff\x7fabc.",
    "underflow": b"\x80\x02s.",
    "memo": b"\x80\x02h\x05.",
    "mark": b"\x80\x02}u.",
    "memo-huge": b"\x80\x02}r\x00\x00\x00\x7f.",
}


def with_pickle(archive, pickle, out):
    """`archive` with its data.pkl replaced by `pickle`, CRCs right (zipfile writes them)."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = pickle if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(zipfile.ZipInfo(info.filename), data)


def main():
    build, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    subprocess.run([str(build / "tests" / "fuzz" / "libprune_fuzz_replay"), "--seeds", str(out)], check=True)
    torch.manual_seed(0)
    torch.save(dict(tiny_model().state_dict()), out / "state_dict" / "seed-torch-save.pt")
    n, rows, cols = 3, 4, 4
    images = (2051).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (n, rows, cols))
    images += bytes((i * 7) & 255 for i in range(n * rows * cols))
    labels = (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(range(n))
    for flags in (1, 2, 3):
        (out / "idx" / f"seed-gzip{flags}.idx").write_bytes(idx_input(flags, images, labels))
    for name, pickle in BAD_PICKLES.items():
        with_pickle(out / "state_dict" / "seed-torch-save.pt", pickle, out / "state_dict" / f"crash-pickle-{name}.pt")
        with_pickle(out / "checkpoint" / "seed-dense.ckpt", pickle, out / "checkpoint" / f"crash-pickle-{name}.ckpt")
    root = pathlib.Path(__file__).resolve().parents[2]
    for config in sorted((root / "configs").glob("*.json")):
        shutil.copy(config, out / "recipe" / f"seed-{config.name}")


if __name__ == "__main__":
    main()
