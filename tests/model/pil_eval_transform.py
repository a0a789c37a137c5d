#!/usr/bin/env python3
"""OpenCLIP's eval transform on PIL, and images in the modes PIL treats specially.

`make DIR` writes small images whose PIL modes take their own paths through
Image.resize and Image.convert("RGB"): a GIF with a transparent palette index,
a GIF whose palette is grey (PIL opens it as "L"), 16-bit grey and RGB PNGs
(PIL: "I" and "RGB"), a bilevel PNG ("1"), a palette PNG with tRNS, and LA;
and JPEGs of each chroma subsampling, grey, progressive, odd-sized and
portrait, which oclip decodes with libjpeg-turbo and resamples row block by
row block as they are decoded.

`transform JOBS` reads a JSON list of {"image", "size", "out"} and writes, for
each, the RGB bytes (row-major, interleaved) of what OpenCLIP's eval transform
gives before ToTensor: torchvision's Resize(size, BICUBIC) of the shorter side
(the long side truncated), CenterCrop(size) with round-half-to-even offsets,
then convert("RGB").
"""
import json
import struct
import sys
import zlib

from PIL import Image


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_rgb16_png(path, width, height, pixel):
    """A 16-bit RGB PNG (PIL cannot write one); pixel(x, y) gives three 16-bit values."""
    raw = b"".join(
        b"\x00" + b"".join(struct.pack(">HHH", *pixel(x, y)) for x in range(width))
        for y in range(height))
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)))
        out.write(png_chunk(b"IDAT", zlib.compress(raw)))
        out.write(png_chunk(b"IEND", b""))


def make(folder):
    width, height = 45, 33
    palette = [200, 10, 10, 0, 0, 255, 20, 200, 20, 250, 250, 250, 90, 60, 30]
    indices = [((x // 3) + 2 * (y // 4)) % 5 for y in range(height) for x in range(width)]

    image = Image.new("P", (width, height))
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.putdata(indices)
    image.save(f"{folder}/transparent.gif", transparency=0)
    image.save(f"{folder}/transparent_palette.png", transparency=1)

    grey = Image.new("L", (width, height))
    grey.putdata([(x * 7 + y * 13) % 256 for y in range(height) for x in range(width)])
    grey.save(f"{folder}/grey.gif")

    bilevel = grey.point(lambda v: 255 if v > 127 else 0).convert("1", dither=Image.NONE)
    bilevel.save(f"{folder}/bilevel.png")

    la = Image.merge("LA", (grey, grey.transpose(Image.FLIP_LEFT_RIGHT)))
    la.save(f"{folder}/grey_alpha.png")

    # Values around 255, where PIL's "I" -> "RGB" clipping shows.
    grey16 = Image.new("I", (width, height))
    grey16.putdata([(x * 37 + y * 11) % 700 for y in range(height) for x in range(width)])
    grey16.save(f"{folder}/grey16.png")

    write_rgb16_png(f"{folder}/rgb16.png", width, height,
                    lambda x, y: ((x * 1543) % 65536, (y * 2017) % 65536, (x * y * 331) % 65536))

    photo = Image.new("RGB", (190, 130))
    photo.putdata([((x * 3 + y) % 256, (x * y // 7) % 256, (255 - x + y * 2) % 256)
                   for y in range(130) for x in range(190)])
    for subsampling, name in ((0, "444"), (1, "422"), (2, "420")):
        photo.save(f"{folder}/photo{name}.jpg", quality=90, subsampling=subsampling)
    photo.transpose(Image.TRANSPOSE).save(f"{folder}/portrait420.jpg", quality=90, subsampling=2)
    photo.crop((3, 5, 64, 52)).save(f"{folder}/odd420.jpg", quality=90, subsampling=2)
    photo.convert("L").save(f"{folder}/grey.jpg", quality=90)
    photo.save(f"{folder}/progressive.jpg", quality=90, progressive=True)


def eval_transform(path, size):
    with Image.open(path) as image:
        width, height = image.size
        if width <= height:
            resized = (size, size * height // width)
        else:
            resized = (size * width // height, size)
        image = image.resize(resized, Image.BICUBIC)
        left = int(round((resized[0] - size) / 2.0))
        top = int(round((resized[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        return image.convert("RGB").tobytes()


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "transform":
        for job in json.load(open(sys.argv[2])):
            with open(job["out"], "wb") as out:
                out.write(eval_transform(job["image"], job["size"]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
