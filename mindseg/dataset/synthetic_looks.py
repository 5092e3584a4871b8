"""Appearances of the synthetic dataset's "distinct" style: each class its own colour family and
surface pattern, on varied low-saturation textured backgrounds.

Real classes differ in how they look, not only in their outline; here a rectangle is blue and
striped, an ellipse red and solid, a triangle green and checkered, a star yellow and dotted, a
cross magenta with a radial gradient. Hue, saturation, brightness, pattern period and orientation
vary within a class, so a class is a family of looks, not one colour. Backgrounds stay grey-ish
(saturation below the classes') but carry texture: smooth blotches, a woven grid, tiles or
scattered lines.
"""
import cv2
import numpy as np

# OpenCV hue (0-180) of each class's colour family and its surface pattern, by class name
LOOKS = {
    "rectangle": (112, "stripes"),
    "ellipse": (0, "solid"),
    "triangle": (60, "checker"),
    "star": (25, "dots"),
    "cross": (150, "gradient"),
}
HUE_JITTER = 7


def _hsv_color(hue, saturation, value):
    hsv = np.array([[[int(hue) % 180, int(saturation), int(value)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def class_colors(class_name, rng):
    """The (base, second) BGR float colours of one object: same hue, the second darker."""
    hue = LOOKS[class_name][0] + rng.integers(-HUE_JITTER, HUE_JITTER + 1)
    base = _hsv_color(hue, rng.integers(170, 256), rng.integers(180, 256))
    second = _hsv_color(hue, rng.integers(170, 256), rng.integers(60, 110))
    return base, second


def _frame(ys, xs, center, angle):
    """Float coordinates (u, v) of the pixels at rows ``ys`` and columns ``xs`` (float32 arrays)
    in a frame centred at ``center`` (x, y) and turned by ``angle``."""
    dx, dy = xs - np.float32(center[0]), ys - np.float32(center[1])
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return dx * cos + dy * sin, -dx * sin + dy * cos


def _grid(height, width):
    """The rows and columns of every pixel of an (H, W) image, as float32 (H, W) arrays."""
    return np.mgrid[0:height, 0:width].astype(np.float32)


def pattern(kind, ys, xs, center, radius, angle, rng):
    """Float weight in [0, 1] of the second colour at the pixels (``ys``, ``xs``) for a surface
    pattern."""
    u, v = _frame(ys, xs, center, angle)
    period = max(4.0, radius * rng.uniform(0.35, 0.55))
    if kind == "stripes":
        return ((u / period) % 1.0 < 0.5).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "dots":
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        return (du * du + dv * dv < 0.09).astype(np.float32)
    if kind == "gradient":
        return np.clip(np.sqrt(u * u + v * v) / max(radius, 1.0), 0.0, 1.0)
    if kind == "solid":
        return np.clip(0.15 * (u / max(radius, 1.0) + 1.0), 0.0, 0.3)
    raise ValueError(f"unknown pattern {kind!r}")


def paint_object(image, inside, class_name, center, radius, angle, rng):
    """Paint the pixels `inside` (bool (H, W)) of `image` with the class's colours and pattern."""
    base, second = class_colors(class_name, rng)
    ys, xs = (c.astype(np.float32) for c in np.nonzero(inside))  # only the object's pixels
    weight = pattern(LOOKS[class_name][1], ys, xs, center, radius, angle, rng)
    image[inside] = base * (1.0 - weight[:, None]) + second * weight[:, None]


def _tint(rng):
    """A low-saturation BGR colour: a grey with a small random tint."""
    return rng.uniform(70, 180) + rng.uniform(-18, 18, 3)


def _smooth_noise(height, width, cell, rng):
    noise = rng.normal(0, 1, (height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def background(height, width, rng):
    """(H, W, 3) float textured background of one of four kinds, grey-ish with a tint."""
    kind = int(rng.integers(4))
    low, high = _tint(rng), _tint(rng)
    if kind == 0:    # blotches
        weight = 0.5 + 0.25 * _smooth_noise(height, width, int(rng.integers(8, 32)), rng)
    elif kind == 1:  # woven grid
        u, v = _frame(*_grid(height, width), (0, 0), rng.uniform(0, np.pi))
        period = rng.uniform(6, 16)
        weight = 0.5 + 0.25 * (np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period))
    elif kind == 2:  # tiles with dark joints
        u, v = _frame(*_grid(height, width), (0, 0), rng.uniform(0, np.pi))
        size = rng.uniform(20, 48)
        joint = (np.minimum(u % size, v % size) < 2).astype(np.float32)
        weight = 0.35 + 0.3 * np.clip(_smooth_noise(height, width, 24, rng), -1, 1) * 0.5 + joint * 0.4
    else:            # scattered lines
        canvas = np.zeros((height, width), np.float32)
        for _ in range(int(rng.integers(6, 20))):
            p0 = (int(rng.integers(width)), int(rng.integers(height)))
            p1 = (int(rng.integers(width)), int(rng.integers(height)))
            cv2.line(canvas, p0, p1, float(rng.uniform(0.5, 1.0)), int(rng.integers(1, 4)))
        weight = 0.3 + 0.5 * canvas
    weight = np.clip(weight, 0.0, 1.0)[..., None]
    return low * (1.0 - weight) + high * weight
