#!/usr/bin/python3
"""OpenCLIP's eval transform as Python executes it, for side-by-side timing.

Resize(shorter side, bicubic) -> CenterCrop -> convert("RGB") -> ToTensor ->
Normalize, i.e. what torchvision does with PIL, with numpy standing in for
torch's ToTensor/Normalize (same arithmetic). One thread. Prints one JSON line.
"""
import io
import json
import sys
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)


def transform(data: bytes, size: int) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    image = image.resize(new_size, Image.BICUBIC)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (pixels - MEAN) / STD


def main() -> None:
    path, size, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    with open(path, "rb") as f:
        data = f.read()
    transform(data, size)
    count, start = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - start < seconds:
        transform(data, size)
        count += 1
    rate = count / (time.perf_counter() - start)
    print(json.dumps({"benchmark": "preprocess", "implementation": "python-pil",
                      "image": path, "size": size, "threads": 1,
                      "images_per_second": rate}))


if __name__ == "__main__":
    main()
