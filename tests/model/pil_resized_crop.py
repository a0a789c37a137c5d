#!/usr/bin/env python3
"""torchvision's RandomResizedCrop for a given box, on PIL, for oclip's tests.

torchvision.transforms.functional.resized_crop on a PIL image is
img.crop((left, top, left + width, top + height)).resize((size, size),
BICUBIC); OpenCLIP's train transform then converts to RGB. Reads a JSON list
of jobs {"image", "left", "top", "width", "height", "size", "out"} from the
file named by the first argument and writes each result's RGB bytes (row-major, interleaved) to "out".
"""
import json
import sys

from PIL import Image


def main():
    for job in json.load(open(sys.argv[1])):
        box = (job["left"], job["top"], job["left"] + job["width"], job["top"] + job["height"])
        with Image.open(job["image"]) as image:
            image = image.crop(box).resize((job["size"], job["size"]), Image.BICUBIC)
            image = image.convert("RGB")
        with open(job["out"], "wb") as out:
            out.write(image.tobytes())


if __name__ == "__main__":
    main()
