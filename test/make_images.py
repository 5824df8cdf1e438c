#!/usr/bin/env python3
"""Writes the input images of the image tests (no imaging library needed: PNG is zlib + CRC).

good_rgb_64x64.png, good_rgba_96x72.png, good_gray_96x64.png, good_80x64.jpg (copied from --jpeg if given)
and the bad ones the CLI must refuse: truncated, not an image, 16-bit, empty, 9000 px wide, tiny (32x32),
an extreme aspect ratio (640x64)."""
import os
import struct
import sys
import zlib


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width, height, channels, bit_depth=8, seed=1):
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = bytearray()
    bytes_per_sample = bit_depth // 8
    x = seed
    for _ in range(height):
        rows.append(0)  # filter: none
        for _ in range(width * channels * bytes_per_sample):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF  # deterministic pseudo-random pixels
            rows.append((x >> 16) & 0xFF)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    files = {
        "good_rgb_64x64.png": png(64, 64, 3, seed=1),
        "good_rgba_96x72.png": png(96, 72, 4, seed=2),
        "good_gray_96x64.png": png(96, 64, 1, seed=3),
        "bad_16bit.png": png(64, 64, 3, bit_depth=16),
        "bad_wide_9000x8.png": png(9000, 8, 3),
        "bad_tiny_32x32.png": png(32, 32, 3),
        "bad_aspect_640x64.png": png(640, 64, 3),
        "bad_not_an_image.png": b"this is text, not a picture\n",
        "bad_empty.png": b"",
    }
    files["bad_truncated.png"] = files["good_rgb_64x64.png"][:200]
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
