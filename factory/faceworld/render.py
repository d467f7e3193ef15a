"""Render one face-world image: an identity under one nuisance draw, as an RGB uint8 array.

The face is a small 2.5-D model drawn with OpenCV's anti-aliased primitives. Every feature has a
position in face-local coordinates (x right, y down, unit = head half-width) and a depth z
toward the camera; yaw rotates features about the vertical axis (so the nose swings out and the
far eye narrows), while the head outline stays an ellipse. Roll, scale and shift are the camera.
Light is a directional gradient with an ambient level and a colour tint; blur, sensor noise and
JPEG (applied by the writer) finish the image.

Small outputs are drawn on a larger canvas and shrunk with area averaging, so a 32 px face keeps
its sub-pixel detail. The whole image costs about a millisecond at 112 px on one core.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from factory.faceworld.identity import FIELD_INDEX, describe, hair_style
from factory.faceworld.nuisance import Nuisance

MIN_CANVAS = 64
_SHIFT = 4  # cv2 fixed-point bits: coordinates are passed multiplied by 16
_AA = cv2.LINE_AA

_SKIN = np.array([[62, 40, 28], [120, 80, 55], [185, 135, 100], [238, 200, 175]], float)
_IRIS = np.array([[50, 30, 18], [95, 60, 30], [70, 110, 160], [80, 120, 70], [120, 125, 130]], float)
_HAIR = np.array([[18, 15, 14], [60, 38, 24], [120, 82, 48], [205, 170, 110], [150, 60, 28],
                  [175, 172, 168]], float)
_LIP = np.array([175, 75, 82], float)


def _palette(colours: np.ndarray, t: float) -> np.ndarray:
    """Linear interpolation along a palette of colours, t in [0, 1]."""
    position = np.clip(t, 0.0, 1.0) * (len(colours) - 1)
    low = min(int(position), len(colours) - 2)
    return colours[low] + (position - low) * (colours[low + 1] - colours[low])


def _bgr_safe(colour: np.ndarray) -> tuple[float, float, float]:
    """A colour as the tuple cv2 drawing calls take (channel order is ours: RGB)."""
    r, g, b = (colour.tolist() if isinstance(colour, np.ndarray) else colour)[:3]
    return (min(255.0, max(0.0, r)), min(255.0, max(0.0, g)), min(255.0, max(0.0, b)))


@lru_cache(maxsize=64)
def _steps(start: float, stop: float, count: int, endpoint: bool = True) -> np.ndarray:
    """``np.linspace``, cached: the renderer asks for the same few ramps for every image."""
    ramp = np.linspace(start, stop, count, endpoint=endpoint)
    ramp.flags.writeable = False
    return ramp


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], cached per canvas size."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(axis, axis)


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed field of unit Gaussian noise; each image takes a random window of it."""
    return np.random.default_rng(7).standard_normal((2 * size, 2 * size, 3)).astype(np.float32)


class _Camera:
    """Maps face-local points (x, y, z) to canvas pixels under yaw, roll, scale and shift."""

    def __init__(self, canvas: int, face_width: float, nuisance: Nuisance) -> None:
        self.unit = canvas * 0.34 * nuisance.scale * face_width
        self.cx = canvas * (0.5 + nuisance.shift_x)
        self.cy = canvas * (0.52 + nuisance.shift_y)
        self.cos_roll, self.sin_roll = math.cos(nuisance.roll), math.sin(nuisance.roll)
        self.cos_yaw, self.sin_yaw = math.cos(nuisance.yaw), math.sin(nuisance.yaw)
        self.roll_degrees = math.degrees(nuisance.roll)
        # project() in fixed point: canvas = centre + unit * R(roll) (x, y), times 2^_SHIFT.
        fixed = float(1 << _SHIFT)
        self._centre = (self.cx * fixed, self.cy * fixed)
        self._cos = self.unit * fixed * self.cos_roll
        self._sin = self.unit * fixed * self.sin_roll

    def rotate(self, x, z):
        """Horizontal position after yaw of a point at lateral x and depth z."""
        if isinstance(x, np.ndarray) or isinstance(z, np.ndarray):
            return np.asarray(x) * self.cos_yaw + np.asarray(z) * self.sin_yaw
        return x * self.cos_yaw + z * self.sin_yaw

    def depth(self, x, z):
        """Depth after yaw: positive means facing the camera."""
        if isinstance(x, np.ndarray) or isinstance(z, np.ndarray):
            return -np.asarray(x) * self.sin_yaw + np.asarray(z) * self.cos_yaw
        return -x * self.sin_yaw + z * self.cos_yaw

    def project(self, xr, y) -> np.ndarray:
        """Canvas points (N x 2, fixed point) of already-rotated coordinates."""
        xr, y = np.asarray(xr, np.float64), np.asarray(y, np.float64)
        if xr.ndim == 0 and y.ndim == 0:  # one point: most calls, cheaper in plain floats
            x0, y0 = float(xr), float(y)
            return np.array([[round(x0 * self._cos - y0 * self._sin + self._centre[0]),
                              round(x0 * self._sin + y0 * self._cos + self._centre[1])]],
                            np.int32)
        if xr.shape != y.shape or xr.ndim != 1:
            xr, y = np.broadcast_arrays(np.atleast_1d(xr), np.atleast_1d(y))
        out = np.empty((xr.shape[0], 2))
        out[:, 0] = xr * self._cos - y * self._sin + self._centre[0]
        out[:, 1] = xr * self._sin + y * self._cos + self._centre[1]
        return np.rint(out).astype(np.int32)

    def points(self, x, y, z) -> np.ndarray:
        return self.project(self.rotate(x, z), y)

    def silhouette(self, x, y) -> np.ndarray:
        """Outline points: the outline keeps its width and only its front swings with yaw."""
        x = np.asarray(x)
        front = 0.3 * np.sqrt(np.clip(1.0 - x * x, 0.0, 1.0))
        return self.project(x + front * self.sin_yaw, y)

    def length(self, value: float) -> int:
        """A length in face units as a fixed-point pixel length."""
        return max(1, int(round(value * self.unit * (1 << _SHIFT))))

    def thickness(self, value: float) -> int:
        return max(1, int(round(value * self.unit)))


def _fill(image, points, colour) -> None:
    cv2.fillPoly(image, [points], _bgr_safe(colour), _AA, _SHIFT)


def _ellipse(image, centre, axes, angle, colour, thickness=-1, arc=(0, 360)) -> None:
    cv2.ellipse(image, (int(centre[0]), int(centre[1])), axes, angle, arc[0], arc[1],
                _bgr_safe(colour), thickness, _AA, _SHIFT)


def _head_outline(face: dict, steps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Face-local outline of the head: an ellipse above, a jaw narrowing to the chin below."""
    t = _steps(0.0, 2.0 * np.pi, steps, False)
    x, y = np.cos(t), np.sin(t) * face["face_length"]
    lower = np.clip(np.sin(t), 0.0, 1.0)
    x = x * (1.0 - (1.0 - face["jaw_width"]) * lower**2) * (1.0 - 0.45 * face["chin"] * lower**8)
    return x, y


def _linear_field(canvas: int, angle: float, low, high) -> np.ndarray:
    """A linear ramp from ``low`` to ``high`` along ``angle``, one value per pixel and channel.

    The ramp is computed on a 4 x 4 grid and stretched bilinearly, which is exact for a linear
    function and far cheaper than evaluating it per pixel.
    """
    gx, gy = _grid(4)
    t = 0.5 + 0.5 * (gx * np.cos(angle) + gy * np.sin(angle))
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    small = low + t[..., None] * (high - low)
    return cv2.resize(small, (canvas, canvas), interpolation=cv2.INTER_LINEAR)


def _background(canvas: int, nuisance: Nuisance, rng: np.random.Generator) -> np.ndarray:
    first, second = nuisance.background
    image = _linear_field(canvas, nuisance.background_angle, first, second).astype(np.uint8)
    for _ in range(nuisance.background_blobs):
        centre = rng.uniform(0, canvas, 2) * (1 << _SHIFT)
        axes = tuple(int(a) for a in rng.uniform(0.05, 0.3, 2) * canvas * (1 << _SHIFT))
        _ellipse(image, centre, axes, float(rng.uniform(0, 180)), rng.uniform(0, 255, 3))
    return image


def _draw_body(image, cam: _Camera, skin: np.ndarray, nuisance: Nuisance) -> None:
    neck_x = np.array([-0.42, 0.42, 0.46, -0.46]) + 0.15 * cam.sin_yaw
    _fill(image, cam.project(neck_x, np.array([0.6, 0.6, 2.2, 2.2])), skin * 0.82)
    centre = cam.project(0.1 * cam.sin_yaw, 2.45)[0]
    _ellipse(image, centre, (cam.length(2.3), cam.length(0.95)), cam.roll_degrees,
             np.asarray(nuisance.clothing))


def _hair_cap(cam: _Camera, face: dict, inner_y: np.ndarray, side_y: float, volume: float):
    """Hair over the skull: an outer arc following the head, an inner edge across the forehead."""
    t = _steps(np.pi, 2.0 * np.pi, 18)
    outer_x = np.cos(t) * (1.0 + volume)
    outer_y = np.sin(t) * (face["face_length"] + volume)
    outer_y = np.maximum(outer_y, -face["face_length"] - volume)
    outer_y[0] = outer_y[-1] = side_y
    inner_x = np.linspace(0.97, -0.97, len(inner_y))
    inner_z = 0.85 * np.sqrt(np.clip(1.0 - inner_x**2, 0.0, 1.0))
    outer = cam.silhouette(outer_x, outer_y)
    inner = cam.points(inner_x, inner_y, inner_z)
    return np.concatenate([outer, inner])


def _draw_hair_back(image, cam, face: dict, style: str, colour) -> None:
    """Hair that sits behind the head (long hair, volume), drawn before the face."""
    length = face["face_length"]
    if style == "long":
        x = np.array([-1.15, -1.2, -1.05, 1.05, 1.2, 1.15]) - 0.2 * cam.sin_yaw
        y = np.array([-0.4, 1.0, 1.75, 1.75, 1.0, -0.4]) * np.array([1, length, 1, 1, length, 1])
        _fill(image, cam.project(x, y), colour * 0.85)
    elif style == "volume":
        centre = cam.project(-0.15 * cam.sin_yaw, -0.25)[0]
        axes = (cam.length(1.2 + face["hair_volume"]), cam.length(length * 0.95 + face["hair_volume"]))
        _ellipse(image, centre, axes, cam.roll_degrees, colour * 0.9)


def _draw_hair_front(image, cam, face: dict, style: str, colour, eye_y: float) -> None:
    volume = face["hair_volume"] * (0.25 if style == "buzz" else 1.0)
    xs = _steps(0.97, -0.97, 9)
    if style == "fringe":
        inner_y = np.full(9, eye_y - face["brow_gap"] - 0.08) - 0.05 * xs**2
        side = eye_y + 0.1
    else:
        inner_y = face["hairline"] + 0.25 * xs**2
        side = face["hairline"] + 0.45
    cap = _hair_cap(cam, face, inner_y, side, volume)
    if style == "buzz":
        overlay = image.copy()
        _fill(overlay, cap, colour)
        cv2.addWeighted(overlay, 0.55, image, 0.45, 0, dst=image)
    else:
        _fill(image, cap, colour)


def _draw_ears(image, cam, face: dict, skin, eye_y: float, in_front: bool) -> None:
    for side in (-1.0, 1.0):
        visible = cam.depth(side * 0.98, -0.05) > 0.3
        if visible != in_front:
            continue
        centre = cam.points(side * 0.98, eye_y + 0.17, -0.05)[0]
        axes = (cam.length(face["ear_size"] * 0.55 * (0.5 + 0.5 * abs(cam.sin_yaw))),
                cam.length(face["ear_size"]))
        _ellipse(image, centre, axes, cam.roll_degrees, skin * 0.9)
        _ellipse(image, centre, (max(1, axes[0] // 2), max(1, axes[1] // 2)), cam.roll_degrees,
                 skin * 0.72)


def _draw_eye(image, cam, face: dict, nuisance: Nuisance, side: float, eye_y: float) -> None:
    x, z = side * face["eye_spacing"], 0.8
    foreshortening = max(0.12, float(np.cos(side * 0.45 + nuisance.yaw)))
    if cam.depth(x, z) < 0.05:
        return
    width, height = face["eye_size"] * 0.5, face["eye_size"] * 0.5 * face["eye_aspect"]
    height *= nuisance.eye_open
    centre = cam.points(x, eye_y, z)[0]
    _ellipse(image, centre, (cam.length(width * foreshortening), cam.length(height)),
             cam.roll_degrees, np.array([236, 234, 228]))
    iris_radius = width * face["iris_size"] * 0.62
    shift = (nuisance.gaze * width + 0.35 * width * cam.sin_yaw) * foreshortening
    iris_centre = cam.points(x + shift, eye_y, z)[0]
    iris_height = cam.length(min(iris_radius, height * 0.95))
    _ellipse(image, iris_centre, (cam.length(iris_radius * foreshortening), iris_height),
             cam.roll_degrees, _palette(_IRIS, face["iris_color"]))
    _ellipse(image, iris_centre, (cam.length(iris_radius * 0.45 * foreshortening),
                                  max(1, int(iris_height * 0.45))), cam.roll_degrees,
             np.array([12, 10, 10]))
    _ellipse(image, centre, (cam.length(width * foreshortening * 1.05), cam.length(height * 1.1)),
             cam.roll_degrees, np.array([45, 30, 25]), cam.thickness(0.03), (180, 360))


def _draw_brow(image, cam, face: dict, nuisance: Nuisance, side: float, eye_y: float, colour):
    inner = face["eye_spacing"] - 0.3 * face["brow_length"]
    outer = face["eye_spacing"] + 0.7 * face["brow_length"]
    base = eye_y - face["brow_gap"] - nuisance.brow_raise
    x = side * np.linspace(inner, outer, 5)
    along = _steps(0.0, 1.0, 5)
    y = base - face["brow_angle"] * face["brow_length"] * along - 0.04 * np.sin(np.pi * along)
    half = face["brow_thickness"] * (1.0 - 0.55 * along) / 2
    xs = np.concatenate([x, x[::-1]])
    ys = np.concatenate([y - half, (y + half)[::-1]])
    if cam.depth(side * face["eye_spacing"], 0.8) < 0.05:
        return
    _fill(image, cam.points(xs, ys, np.full(10, 0.82)), colour)


def _draw_nose(image, cam, face: dict, skin, eye_y: float) -> None:
    tip_y = eye_y + face["nose_length"]
    width = face["nose_width"]
    bridge = (0.0, eye_y + 0.05, 0.95)
    xs = np.array([bridge[0], -0.35 * width, -width, 0.0, width, 0.35 * width])
    ys = np.array([bridge[1], tip_y - 0.08, tip_y + 0.02, tip_y + 0.05, tip_y + 0.02, tip_y - 0.08])
    zs = np.array([bridge[2], 1.1, 0.92, 1.1, 0.92, 1.1])
    _fill(image, cam.points(xs, ys, zs), skin * 0.86)
    _fill(image, cam.points(xs[1:5] * 0.8, ys[1:5], zs[1:5] + 0.12), skin * 0.97)
    for side in (-1.0, 1.0):
        if cam.depth(side * width * 0.5, 1.0) < 0.1:
            continue
        centre = cam.points(side * width * 0.5, tip_y + 0.02, 1.0)[0]
        _ellipse(image, centre, (cam.length(width * 0.28), cam.length(width * 0.15)),
                 cam.roll_degrees, skin * 0.45)


def _draw_mouth(image, cam, face: dict, nuisance: Nuisance, lip) -> None:
    half = face["mouth_width"] * 0.85
    x = np.linspace(-half, half, 11)
    bulge = 1.0 - (x / half) ** 2
    z = 0.9 - 0.25 * (x / half) ** 2
    line = face["mouth_height"] - 0.07 * nuisance.smile * (1.0 - bulge)
    opening = 0.1 * nuisance.mouth_open * bulge
    thick = face["lip_thickness"]
    upper_top = line - thick * bulge * (0.8 - 0.25 * np.exp(-((x / half) * 6) ** 2))
    lower_bottom = line + opening + thick * 1.15 * bulge

    def band(top, bottom):
        return cam.points(np.concatenate([x, x[::-1]]), np.concatenate([top, bottom[::-1]]),
                          np.concatenate([z, z[::-1]]))

    _fill(image, band(line, line + opening + 0.012), np.array([70, 20, 25]))
    _fill(image, band(upper_top, line), lip * 0.9)
    _fill(image, band(line + opening, lower_bottom), lip)


def _draw_marks(image, cam, face: dict, hair_colour, skin, outline) -> None:
    if face["beard"] > 0.7:
        density = (face["beard"] - 0.7) / 0.3
        lower = outline[1] > face["mouth_height"] - 0.25
        xs, ys = outline[0][lower], outline[1][lower]
        order = np.argsort(np.arctan2(ys - face["mouth_height"], xs))
        overlay = image.copy()
        _fill(overlay, cam.silhouette(xs[order] * 0.97, ys[order]), hair_colour)
        alpha = 0.45 + 0.45 * density
        cv2.addWeighted(overlay, alpha, image, 1.0 - alpha, 0, dst=image)
    if face["mole"] > 0.6:
        z = 0.8 * np.sqrt(max(0.0, 1.0 - face["mole_x"] ** 2))
        if cam.depth(face["mole_x"], z) > 0.1:
            centre = cam.points(face["mole_x"], face["mole_y"], z)[0]
            radius = cam.length(0.035)
            _ellipse(image, centre, (radius, radius), 0.0, skin * 0.35)


def _draw_occlusion(image, cam, face: dict, nuisance: Nuisance, eye_y: float) -> None:
    if nuisance.occlusion == "none":
        return
    rng = np.random.default_rng(nuisance.occlusion_seed)
    kind = nuisance.occlusion
    if kind in ("glasses", "sunglasses"):
        frame = rng.uniform(0, 90, 3) if rng.random() < 0.7 else rng.uniform(120, 200, 3)
        lens = rng.uniform(5, 45, 3)
        ends = []
        for side in (-1.0, 1.0):
            x = side * face["eye_spacing"]
            foreshortening = max(0.15, float(np.cos(side * 0.45 + nuisance.yaw)))
            centre = cam.points(x, eye_y + 0.02, 0.9)[0]
            axes = (cam.length(0.19 * foreshortening), cam.length(0.13))
            if kind == "sunglasses":
                _ellipse(image, centre, axes, cam.roll_degrees, lens)
            _ellipse(image, centre, axes, cam.roll_degrees, frame, cam.thickness(0.035))
            ends.append(cam.points(x - side * 0.19, eye_y, 0.92)[0])
            temple = cam.points(np.array([x + side * 0.19, side * 0.98]), np.array([eye_y, eye_y]),
                                np.array([0.85, 0.0]))
            if cam.depth(side * 0.98, 0.0) > -0.3:
                cv2.polylines(image, [temple], False, _bgr_safe(frame), cam.thickness(0.03),
                              _AA, _SHIFT)
        cv2.polylines(image, [np.array(ends)], False, _bgr_safe(frame), cam.thickness(0.03),
                      _AA, _SHIFT)
    elif kind == "mask":
        colour = [np.array([150, 190, 225]), np.array([235, 235, 235]),
                  np.array([30, 30, 35])][int(rng.integers(3))]
        top = eye_y + face["nose_length"] * 0.55
        xs = _steps(-0.95, 0.95, 11)
        bottom = np.minimum(face["face_length"] * 0.97 * np.sqrt(1 - (xs / 1.05) ** 2),
                            face["face_length"] * 0.97)
        ys = np.concatenate([top + 0.08 * xs**2, bottom[::-1] * (1 - 0.3 * (1 - face["jaw_width"]))])
        zs = 0.95 * np.sqrt(np.clip(1.0 - np.concatenate([xs, xs[::-1]]) ** 2, 0.0, 1.0))
        _fill(image, cam.points(np.concatenate([xs, xs[::-1]]), ys, zs), colour)
    elif kind == "hand":
        skin = _palette(_SKIN, rng.random())
        side = rng.choice((-1.0, 1.0))
        cx, cy = side * rng.uniform(0.2, 0.55), rng.uniform(0.5, 1.0)
        angle = float(rng.uniform(-40, 40))
        _ellipse(image, cam.points(cx, cy + 0.35, 0.9)[0], (cam.length(0.42), cam.length(0.38)),
                 angle + cam.roll_degrees, skin)
        for finger in range(4):
            fx = cx + (finger - 1.5) * 0.2
            _ellipse(image, cam.points(fx, cy - 0.15, 0.95)[0],
                     (cam.length(0.09), cam.length(0.34)), angle + cam.roll_degrees, skin * 0.97)
    elif kind == "hat":
        colour = rng.uniform(10, 240, 3)
        t = _steps(np.pi, 2 * np.pi, 14)
        crown_y = np.sin(t) * (face["face_length"] + 0.2) - 0.05
        crown = cam.silhouette(np.cos(t) * 1.12, np.minimum(crown_y, face["hairline"] + 0.12))
        _fill(image, crown, colour)
        brim = cam.points(0.0, face["hairline"] + 0.12, 0.6)[0]
        _ellipse(image, brim, (cam.length(1.3), cam.length(0.12)), cam.roll_degrees, colour * 0.8)


def _apply_camera(image: np.ndarray, nuisance: Nuisance, canvas: int, rng) -> np.ndarray:
    tint = np.asarray(nuisance.tint, np.float32) * nuisance.ambient
    light = _linear_field(canvas, nuisance.light_angle, tint * (1.0 - nuisance.light_strength),
                          tint * (1.0 + nuisance.light_strength))
    out = image.astype(np.float32) * np.maximum(light, 0.06)
    if nuisance.noise > 0:
        oy, ox = rng.integers(0, canvas, 2)
        out += nuisance.noise * _noise_bank(canvas)[oy : oy + canvas, ox : ox + canvas]
    out = np.clip(out, 0, 255).astype(np.uint8)
    sigma = nuisance.blur * canvas
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    return out


def render_face(identity: np.ndarray, nuisance: Nuisance, size: int) -> np.ndarray:
    """The image of ``identity`` under ``nuisance``: ``size`` x ``size`` x 3, uint8 RGB."""
    canvas = max(size, MIN_CANVAS)
    face = describe(identity)
    rng = np.random.default_rng(nuisance.occlusion_seed + 1)
    cam = _Camera(canvas, face["face_width"], nuisance)
    skin = _palette(_SKIN, face["skin_tone"])
    skin = skin + (face["skin_warmth"] - 0.5) * np.array([18.0, -6.0, -14.0])
    hair = _palette(_HAIR, identity[FIELD_INDEX["hair_color"]])
    lip = skin + (0.25 + 0.5 * face["lip_tone"]) * (_LIP - skin)
    style = hair_style(identity)
    eye_y = face["eye_height"]

    image = _background(canvas, nuisance, rng)
    _draw_hair_back(image, cam, face, style, hair)
    _draw_body(image, cam, skin, nuisance)
    _draw_ears(image, cam, face, skin, eye_y, in_front=False)
    outline = _head_outline(face)
    _fill(image, cam.silhouette(*outline), skin)
    cheek = cam.points(0.0, 0.15, 0.9)[0]
    _ellipse(image, cheek, (cam.length(0.62), cam.length(face["face_length"] * 0.6)),
             cam.roll_degrees, skin * 1.025)
    _draw_ears(image, cam, face, skin, eye_y, in_front=True)
    _draw_marks(image, cam, face, hair, skin, outline)
    _draw_hair_front(image, cam, face, style, hair, eye_y)
    for side in (-1.0, 1.0):
        _draw_eye(image, cam, face, nuisance, side, eye_y)
        _draw_brow(image, cam, face, nuisance, side, eye_y, hair * 0.8)
    _draw_nose(image, cam, face, skin, eye_y)
    _draw_mouth(image, cam, face, nuisance, lip)
    _draw_occlusion(image, cam, face, nuisance, eye_y)
    image = _apply_camera(image, nuisance, canvas, rng)
    if canvas != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image
