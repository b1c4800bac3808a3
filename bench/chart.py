"""A tiny PNG writer (zlib + struct) with a 3x5 pixel font: bar charts without matplotlib."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

RGB = tuple[int, int, int]
_GLYPHS = {  # 3 columns x 5 rows per character, rows top to bottom
    "A": "010101111101101",
    "B": "110101110101110",
    "C": "011100100100011",
    "D": "110101101101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "J": "001001001101010",
    "K": "101101110101101",
    "L": "100100100100111",
    "M": "101111111101101",
    "N": "110101101101101",
    "O": "010101101101010",
    "P": "110101110100100",
    "Q": "010101101110011",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "U": "101101101101111",
    "V": "101101101101010",
    "W": "101101111111101",
    "X": "101101010101101",
    "Y": "101101010010010",
    "Z": "111001010100111",
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "110001010100111",
    "3": "110001010001110",
    "4": "101101111001001",
    "5": "111100110001110",
    "6": "011100111101111",
    "7": "111001010010010",
    "8": "111101111101111",
    "9": "111101111001110",
    ".": "000000000000010",
    ",": "000000000010100",
    "-": "000000111000000",
    ":": "000010000010000",
    "/": "001001010100100",
    "(": "010100100100010",
    ")": "010001001001010",
    "%": "101001010100101",
    "=": "000111000111000",
    "+": "000010111010000",
    "_": "000000000000111",
    ">": "100010001010100",
    " ": "000000000000000",
}


def encode_png(width: int, height: int, pixels: bytes | bytearray) -> bytes:
    """An 8-bit RGB PNG from `width * height * 3` bytes, rows top to bottom."""
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(pixels[y * stride : (y + 1) * stride]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


class Canvas:
    """An RGB canvas with rectangles and text."""

    def __init__(self, width: int, height: int, background: RGB = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x: int, y: int, w: int, h: int, color: RGB) -> None:
        """Fill a rectangle (clipped to the canvas)."""
        x0, y0, x1, y1 = max(0, x), max(0, y), min(self.width, x + w), min(self.height, y + h)
        for row in range(y0, y1):
            start = (row * self.width + x0) * 3
            self.pixels[start : start + (x1 - x0) * 3] = bytes(color) * (x1 - x0)

    def text(self, x: int, y: int, text: str, color: RGB = (20, 20, 20), scale: int = 2) -> int:
        """Draw text (unknown characters as blanks); returns the x after the last character."""
        for char in text.upper():
            glyph = _GLYPHS.get(char, _GLYPHS[" "])
            for i, bit in enumerate(glyph):
                if bit == "1":
                    self.rect(x + (i % 3) * scale, y + (i // 3) * scale, scale, scale, color)
            x += 4 * scale
        return x

    def png(self) -> bytes:
        """The canvas as PNG bytes."""
        return encode_png(self.width, self.height, self.pixels)


def bar_chart(title: str, bars: Sequence[tuple[str, float, RGB]], unit: str, note: str = "") -> bytes:
    """Horizontal bars, one per (label, value, colour), each labelled with its value."""
    label_w, bar_w, row_h, top = 8 * max([len(label) for label, _, _ in bars] + [10]) + 20, 520, 30, 50
    width, height = label_w + bar_w + 140, top + row_h * len(bars) + 40
    canvas = Canvas(width, height)
    canvas.text(10, 12, title, scale=3)
    peak = max([value for _, value, _ in bars] + [1e-9])
    for i, (label, value, color) in enumerate(bars):
        y = top + i * row_h
        canvas.text(10, y + 8, label)
        length = max(1, round(bar_w * value / peak))
        canvas.rect(label_w, y + 4, length, row_h - 8, color)
        canvas.text(label_w + length + 8, y + 8, f"{value:.3g} {unit}")
    canvas.rect(label_w - 1, top, 1, row_h * len(bars), (120, 120, 120))
    if note:
        canvas.text(10, height - 24, note, color=(90, 90, 90))
    return canvas.png()


def tiny_image(width: int = 32, height: int = 24, color: RGB = (200, 40, 40)) -> bytes:
    """A one-colour PNG (what the bench's image server serves)."""
    return encode_png(width, height, bytes(color) * (width * height))
