"""Image sizes read from the file header, so that a decompression bomb is refused before it is decoded.

A 64 KB PNG can declare 23000 x 23000 pixels: decoding it costs 1.6 GB. The
`images` signatures decode in the graph, so the server reads the width and
height from the header first (PNG IHDR, GIF logical screen and frames, BMP
info header, JPEG SOF markers) and refuses images over a pixel limit.
"""

from __future__ import annotations

import struct

#: Default pixel limit: 40 megapixels (a 7,000 x 5,700 photo), far above what ViT resizes to.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) the header declares, the largest frame for GIFs; None when the format is not known."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return _gif_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    return None


def _gif_size(data: bytes) -> tuple[int, int]:
    """The logical screen, or a larger frame: the blocks are walked as the format lays them out."""
    width, height = struct.unpack("<HH", data[6:10])
    position = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # after the global color table
    while position < len(data):
        block = data[position]
        if block == 0x2C and position + 10 <= len(data):  # image descriptor
            frame_width, frame_height = struct.unpack("<HH", data[position + 5:position + 9])
            width, height = max(width, frame_width), max(height, frame_height)
            flags = data[position + 9]
            position += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1  # local table, LZW code size
        elif block == 0x21:  # extension: label, then sub-blocks
            position += 2
        else:  # the trailer, or something this reader does not know
            break
        while position < len(data) and data[position]:  # data sub-blocks, ended by a zero length
            position += data[position] + 1
        position += 1
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height
        position += 2 + length
    return None


def check_image(data: bytes, max_pixels: int, index: int = 0) -> None:
    """ValueError when the header declares more than `max_pixels` pixels."""
    size = image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ValueError(
            f"Image {index} declares {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels, over the server's limit of "
            f"{max_pixels:,} (--max_image_pixels)."
        )
