"""Images with a known gradient for the ImageFolder geometry test, made at test time (nothing binary
is committed): red = 3 * column, green = 4 * row, blue = 100, 64 wide and 48 high, as lossless PNG
and as JPEG (quality 95), each in <dir>/<format>/gradient/.

  image_fixtures.py DIR
"""
import os
import sys

import torch
import torchvision.io


def main(root):
    h, w = 48, 64
    image = torch.empty(3, h, w, dtype=torch.uint8)
    image[0] = (torch.arange(w) * 3).expand(h, w)
    image[1] = (torch.arange(h) * 4).unsqueeze(1).expand(h, w)
    image[2] = 100
    for fmt in ("png", "jpg"):
        folder = os.path.join(root, fmt, "gradient")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "0." + fmt)
        if fmt == "png":
            torchvision.io.write_png(image, path)
        else:
            torchvision.io.write_jpeg(image, path, quality=95)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
