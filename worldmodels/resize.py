"""OpenCV's INTER_AREA downscaling of uint8 RGB frames, bit for bit, as two small matrix products.

The observation's resize is the costliest part of an environment step after the emulator, and
OpenCV's area resize at fractional scales (210x160 to 64x64) runs as a scalar loop. Area
resizing is linear with rational weights, which allows an exact and faster route:

- Scaled by their common denominators Dx and Dy, the weights are small integers. Every partial
  sum of integer weight x pixel is then an integer below 2**24, which float32 holds exactly in
  any summation order, so the matrix products (BLAS, blocked by the scales' period) give the
  exact area mean times D = Dx * Dy.
- When D is odd, no area mean is a tie (k + 1/2), and every one lies at least 1/(2D) from a tie.
  OpenCV accumulates in float32, off by less than that (see `_opencv_error`), and the final
  scaling by 1/D here is off by less still, so both round to the same integers: same pixels.

From 210x160 screens, sizes 32, 64, 96, 128 and 160 take this route; every other size (84x84,
where D is even, say) goes through OpenCV.
"""

from __future__ import annotations

from fractions import Fraction
from math import ceil, floor, gcd, lcm

import numpy as np


def area_weights(src: int, dst: int) -> list[list[Fraction]]:
    """The weight of source pixel s in destination pixel d (a dst x src matrix), as OpenCV's
    area table has it: the overlap of [s, s + 1) with [d * scale, (d + 1) * scale) over scale,
    with partial overlaps of up to 1e-3 dropped."""
    scale = Fraction(src, dst)
    rows = []
    for d in range(dst):
        lo, hi = d * scale, (d + 1) * scale
        row = [Fraction(0)] * src
        for s in range(floor(lo), min(src, ceil(hi))):
            overlap = min(hi, s + 1) - max(lo, s)
            if overlap > Fraction(1, 1000) or lo <= s and s + 1 <= hi:
                row[s] = overlap / scale
        rows.append(row)
    return rows


def _opencv_error(taps_x: int, taps_y: int) -> float:
    """A bound on how far OpenCV's float32 area mean of a uint8 image can be from the exact one.

    Each pass sums taps of weight x value, all below 256 (half an ulp there is 2**-17): each
    addition is off by at most 2**-17, the rounded products together by at most 255 * 2**-24
    (about 2 * 2**-17), and so are the float32 weights; the vertical pass carries the horizontal
    one's error, scaled by weights that sum to 1.
    """
    return (taps_x + taps_y + 8) * 2.0**-17


class AreaResize:
    """cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA) for uint8 [height, width, 3]."""

    def __init__(self, height: int, width: int, size: int):
        self.shape, self.size = (height, width, 3), size
        wy, wx = area_weights(height, size), area_weights(width, size)
        dy = lcm(*(w.denominator for row in wy for w in row))
        dx = lcm(*(w.denominator for row in wx for w in row))
        taps_y, taps_x = (max(sum(w > 0 for w in row) for row in m) for m in (wy, wx))
        self.exact = (size <= min(height, width) and (dx * dy) % 2 == 1 and 255 * dx * dy < 2**24
                      and _opencv_error(taps_x, taps_y) < Fraction(1, 2 * dx * dy))
        self._pixels = np.empty(self.shape, np.float32)
        if not self.exact:
            return
        self._scale = 1.0 / (dx * dy)
        # The weights repeat with the scales' period: gcd(src, size) identical blocks per axis.
        # Horizontal: each block of bx source pixels (3 channels each) makes size/gx outputs.
        gx, gy = gcd(width, size), gcd(height, size)
        bx = width // gx
        block_x = np.array([[int(w * dx) for w in row[:bx]] for row in wx[: size // gx]], np.float32)
        self._wx = np.kron(block_x.T, np.eye(3, dtype=np.float32))  # [bx * 3, size / gx * 3]
        self._wy = np.array([[int(w * dy) for w in row[: height // gy]] for row in wy[: size // gy]], np.float32)
        self._gy = gy
        self._rows = np.empty((height * gx, self._wx.shape[1]), np.float32)  # source rows resized: [height, size * 3]
        self._out = np.empty((gy, size // gy, size * 3), np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        size, height = self.size, self.shape[0]
        if not self.exact and size > min(self.shape[:2]):
            # upscaling, where INTER_AREA is OpenCV's bilinear code, in fixed point for uint8
            return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        np.copyto(self._pixels, frame, casting="unsafe")
        if not self.exact:
            # OpenCV's area downscaling of uint8 accumulates in float32 and rounds to nearest: on
            # a float32 copy it gives the same pixels, about 30% faster
            resized = cv2.resize(self._pixels, (size, size), interpolation=cv2.INTER_AREA)
            return cv2.convertScaleAbs(resized)
        np.matmul(self._pixels.reshape(len(self._rows), -1), self._wx, out=self._rows)
        np.matmul(self._wy, self._rows.reshape(self._gy, height // self._gy, -1), out=self._out)
        # exact multiples of 1/D, none a tie: OpenCV's round-to-nearest gives the exact mean rounded
        return cv2.convertScaleAbs(self._out.reshape(size, size, 3), alpha=self._scale)
