"""A procedural world of coloured shapes standing on a floor in front of a wall, with exact labels.

Every scene is a pinhole-camera view of a room: a textured wall at depth ``wall_depth`` (a plane facing
the camera), a tiled floor (the plane ``y = camera_height`` below the camera), and 2 to 5 flat shapes
standing upright on the floor at depths between the bottom of the view and the wall. A shape of physical
size ``S`` metres at depth ``Z`` covers ``focal * S / Z`` pixels and its base sits on the floor row
``horizon + focal * camera_height / Z``, so nearer shapes are larger and lower, and shapes are painted far
to near so the nearer one wins where they overlap. Depth is z-depth in metres: the wall is constant, the
floor is ``focal * camera_height / (row + 0.5 - horizon)``, a shape is its constant ``Z`` (a cut-out
facing the camera, so it is never farther than the floor or wall behind it).

Surface normals are exact, from the same geometry, in the camera frame (x right, y down, z forward),
unit length and facing the camera: the wall and every shape ``(0, 0, -1)``, the floor ``(0, -1, 0)``
(:data:`WALL_NORMAL`, :data:`FLOOR_NORMAL`); every pixel has one.

Class scheme (:data:`CLASS_NAMES`, 17 classes): 0 = ``"background"`` (wall and floor), then one class
per (colour, shape) pair, ``1 + colour_index * 4 + shape_index`` with colours red, green, blue, yellow
and shapes circle, square, triangle, star: 1 = "red circle", 2 = "red square", ..., 16 = "yellow star".

What makes it not trivial: every colour comes in four shapes (colour alone cannot tell the class), the
wall's stripes, checks and blotches use the same four hues, and hue, saturation, shading and a global
lighting gradient vary per scene. What keeps it learnable: clean silhouettes, a fixed camera model, at
least a few pixels per shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from siglip2_dense.errors import RequestError

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
CLASS_NAMES = ("background", *(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES))
NUM_CLASSES = len(CLASS_NAMES)
COLOUR_HUES_DEGREES = {"red": 0.0, "green": 120.0, "blue": 225.0, "yellow": 55.0}
WALL_NORMAL = (0.0, 0.0, -1.0)  # the wall and the upright cut-outs face the camera
FLOOR_NORMAL = (0.0, -1.0, 0.0)  # the floor faces up: -y in a y-down camera frame
NUMBER_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def class_index(colour: str, shape: str) -> int:
    """The class of a (colour, shape) pair: ``1 + colour_index * len(SHAPES) + shape_index``."""
    return 1 + COLOURS.index(colour) * len(SHAPES) + SHAPES.index(shape)


@dataclass(frozen=True)
class SyntheticScene:
    """One rendered scene.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        mask: ``[H, W]`` uint8 class indices into :data:`CLASS_NAMES`.
        depth: ``[H, W]`` float32 z-depth in metres (all positive).
        caption: what is visible, e.g. ``"two red circles and a blue square"``.
        labels_present: the sorted distinct values of ``mask`` (background included when visible).
        focal: the camera's focal length in pixels (principal point at the image centre).
        normals: ``[H, W, 3]`` float32 unit surface normals in the camera frame (x right, y down, z forward).
    """

    image: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    caption: str
    labels_present: tuple[int, ...]
    focal: float
    normals: np.ndarray


@dataclass(frozen=True)
class _Camera:
    focal: float  # pixels
    centre_x: float  # pixels
    horizon: float  # row of the vanishing line, pixels from the top
    height: float  # metres above the floor
    wall_depth: float  # metres

    def floor_row(self, depth: float) -> float:
        return self.horizon + self.focal * self.height / depth


def make_scene(seed: int | Sequence[int], height: int = 64, width: int = 64) -> SyntheticScene:
    """Render the scene of ``seed`` (an int or a sequence of ints) at ``height x width`` pixels.

    The same seed and size always give the same arrays.
    """
    if height < 16 or width < 16:
        raise RequestError(f"synthetic scenes need at least 16x16 pixels, got {height}x{width}")
    rng = np.random.default_rng(seed)
    camera = _Camera(
        focal=0.8 * width * rng.uniform(0.9, 1.1),
        centre_x=width / 2,
        horizon=height * rng.uniform(0.25, 0.45),
        height=rng.uniform(1.0, 1.6),
        wall_depth=rng.uniform(5.0, 9.5),
    )
    depth, floor = _room_depth(camera, height, width)
    image = _wall_texture(rng, height, width)
    image[floor] = _floor_texture(rng, camera, depth, height, width)[floor]
    mask = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.uint8)
    objects = _place_objects(rng, camera, height, width)
    for obj in objects:
        _darken_shadow(image, camera, obj, floor)
    for number, obj in enumerate(sorted(objects, key=lambda o: -o["depth"]), start=1):
        _paint_object(rng, image, mask, depth, instances, obj, number)
    image = _light_and_noise(rng, image)
    caption = _caption(mask, instances)
    labels = tuple(int(v) for v in np.unique(mask))
    normals = scene_normals(floor & (instances == 0))
    return SyntheticScene(image, mask, depth, caption, labels, focal=camera.focal, normals=normals)


def scene_normals(visible_floor: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool (where the floor is seen) -> ``[H, W, 3]`` float32: the floor's normal there, the wall's
    (which the cut-outs share) elsewhere."""
    return np.where(visible_floor[..., None], np.float32(FLOOR_NORMAL), np.float32(WALL_NORMAL)).astype(np.float32)


def _room_depth(camera: _Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth of the empty room ``[H, W]`` float32 metres, and where the floor is ``[H, W]`` bool.

    Pixel row ``v`` spans ``[v, v + 1)``; its centre ``v + 0.5`` sees the floor at
    ``focal * camera_height / (v + 0.5 - horizon)`` unless the wall is nearer.
    """
    rows = np.arange(height, dtype=np.float64) + 0.5 - camera.horizon
    floor_depth = camera.focal * camera.height / np.maximum(rows, 1e-9)
    on_floor = (rows > 0) & (floor_depth < camera.wall_depth)
    column = np.where(on_floor, floor_depth, camera.wall_depth).astype(np.float32)
    return np.repeat(column[:, None], width, axis=1), np.repeat(on_floor[:, None], width, axis=1)


def _random_colour(rng: np.random.Generator, hue: float | None = None, saturation=(0.2, 0.9)) -> np.ndarray:
    """An RGB float colour in [0, 255]; a random hue unless given (degrees)."""
    hue = rng.uniform(0, 360) if hue is None else hue
    hsv = np.array(
        [[[hue / 2 % 180, rng.uniform(*saturation) * 255, rng.uniform(0.45, 1.0) * 255]]], np.float32
    )
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _distractor_colour(rng: np.random.Generator) -> np.ndarray:
    """Half the time one of the object hues, so colour alone cannot find the objects."""
    if rng.random() < 0.5:
        return _random_colour(rng, COLOUR_HUES_DEGREES[COLOURS[rng.integers(len(COLOURS))]], (0.5, 1.0))
    return _random_colour(rng)


def _wall_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    a, b = _distractor_colour(rng), _distractor_colour(rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = rng.integers(3)
    period = rng.uniform(0.08, 0.25) * width
    if kind == 0:  # stripes at a random angle
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * xs + np.sin(angle) * ys) / period
        weight = (np.sin(2 * np.pi * t) > 0).astype(np.float32)
    elif kind == 1:  # checks
        weight = ((np.floor(xs / period) + np.floor(ys / period)) % 2).astype(np.float32)
    else:  # blotches: smooth noise
        coarse = rng.random((max(2, height // 12), max(2, width // 12))).astype(np.float32)
        weight = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    return weight[..., None] * a + (1 - weight[..., None]) * b


def _floor_texture(
    rng: np.random.Generator, camera: _Camera, depth: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Tiles laid on the floor plane: square in metres, so they shrink with distance."""
    tile = rng.uniform(0.4, 1.0)
    xs = (np.arange(width, dtype=np.float32) + 0.5 - camera.centre_x)[None, :] * depth / camera.focal
    checks = ((np.floor(xs / tile) + np.floor(depth / tile)) % 2).astype(np.float32)[..., None]
    a = _random_colour(rng, saturation=(0.0, 0.35))
    b = a * rng.uniform(0.6, 0.85)
    return checks * a + (1 - checks) * b


def _place_objects(
    rng: np.random.Generator, camera: _Camera, height: int, width: int
) -> list[dict[str, Any]]:
    nearest_floor = camera.focal * camera.height / (height - camera.horizon)  # depth at the bottom row
    min_pixels, max_pixels = max(5.0, 0.1 * min(height, width)), 0.6 * min(height, width)
    objects = []
    for _ in range(rng.integers(2, 6)):
        size = rng.uniform(0.5, 1.2)
        near = max(0.9 * nearest_floor, camera.focal * size / max_pixels)
        far = min(0.95 * camera.wall_depth, camera.focal * size / min_pixels)
        # uniform in disparity = uniform in the row of the base
        depth = far if near >= far else 1.0 / rng.uniform(1.0 / far, 1.0 / near)
        objects.append(
            {
                "colour": COLOURS[rng.integers(len(COLOURS))],
                "shape": SHAPES[rng.integers(len(SHAPES))],
                "depth": float(depth),
                "pixels": camera.focal * size / depth,
                "column": rng.uniform(0.05, 0.95) * width,
                "base_row": camera.floor_row(depth),
                "angle": rng.uniform(-0.35, 0.35),
            }
        )
    return objects


def _shape_outline(shape: str, size: float, angle: float) -> np.ndarray:
    """Vertices ``[K, 2]`` (x, y) of a shape of ``size`` pixels centred on the origin."""
    if shape == "circle":
        turns, radii = np.linspace(0, 2 * np.pi, 40, endpoint=False), np.full(40, size / 2)
    elif shape == "square":
        turns, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.full(4, size * 0.6)
    elif shape == "triangle":
        turns, radii = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.full(3, size * 0.6)
    else:
        turns = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, size * 0.55, size * 0.24)
    turns = turns + angle
    return np.stack([radii * np.cos(turns), radii * np.sin(turns)], axis=1)


def _darken_shadow(image: np.ndarray, camera: _Camera, obj: dict[str, Any], floor: np.ndarray) -> None:
    stencil = np.zeros(floor.shape, np.uint8)
    centre = (int((obj["column"] - 0.5) * 16), int((obj["base_row"] - 0.5) * 16))
    axes = (int(obj["pixels"] * 0.6 * 16), int(max(1.0, obj["pixels"] * 0.12) * 16))
    cv2.ellipse(stencil, centre, axes, 0, 0, 360, 1, thickness=-1, shift=4)
    image[(stencil > 0) & floor] *= 0.6


def _paint_object(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    depth: np.ndarray,
    instances: np.ndarray,
    obj: dict[str, Any],
    number: int,
) -> None:
    outline = _shape_outline(obj["shape"], obj["pixels"], obj["angle"])
    outline[:, 0] += obj["column"]
    outline[:, 1] += obj["base_row"] - outline[:, 1].max()  # stand on the floor
    # OpenCV puts pixel centres on integers, this module at +0.5: shift by half a pixel.
    stencil = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(stencil, [np.round((outline - 0.5) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    # fillPoly also paints pixels its edges touch: drop rows whose centre lies below the base, where
    # the floor is nearer than the object would be
    below_base = np.arange(mask.shape[0]) + 0.5 > obj["base_row"]
    stencil[below_base] = 0
    inside = stencil > 0
    if not inside.any():
        return
    colour = _random_colour(rng, COLOUR_HUES_DEGREES[obj["colour"]] + rng.uniform(-8, 8), (0.6, 1.0))
    ys, xs = np.nonzero(inside)
    direction = rng.normal(size=2)
    along = (xs - xs.mean()) * direction[0] + (ys - ys.mean()) * direction[1]
    shade = 1.0 + 0.25 * along / (np.abs(along).max() + 1e-6)
    image[ys, xs] = colour * shade[:, None]
    mask[inside] = class_index(obj["colour"], obj["shape"])
    depth[inside] = obj["depth"]
    instances[inside] = number


def _light_and_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    light = rng.uniform(0.75, 1.15) + rng.uniform(-0.4, 0.4) * xs + rng.uniform(-0.4, 0.4) * ys
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * rng.uniform(2.0, 8.0)
    return np.clip(image * light[..., None] + noise, 0, 255).astype(np.uint8)


def _caption(mask: np.ndarray, instances: np.ndarray) -> str:
    """Name what is visible: ``"a red circle, two blue stars and a yellow square"`` (class order)."""
    counts: dict[int, int] = {}
    for number in np.unique(instances[instances > 0]):
        visible = mask[instances == number]
        if visible.size >= 4:
            label = int(visible[0])
            counts[label] = counts.get(label, 0) + 1
    if not counts:
        return "an empty room"
    phrases = [
        f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {CLASS_NAMES[label]}{'s' if n > 1 else ''}"
        for label, n in sorted(counts.items())
    ]
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def scene_seed(seed: int, index: int) -> tuple[int, int]:
    """The seed of scene ``index`` in a data set seeded with ``seed``."""
    return (seed, index)


class SyntheticDataset(Dataset):
    """``num`` synthetic scenes rendered on demand (deterministic from ``seed`` and the index).

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8, "depth": [H, W] float32 metres,
    "caption": str, "path": "synthetic://<seed>/<index>"}``, plus ``"normals": [H, W, 3]`` float32 with
    ``normals=True``.
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        num: int,
        seed: int = 0,
        size: tuple[int, int] = (64, 64),
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        normals: bool = False,
    ) -> None:
        if num < 1:
            raise RequestError(f"num={num}: a synthetic data set needs at least one scene")
        self.num, self.seed, self.size, self.transform = num, seed, tuple(size), transform
        self.normals = bool(normals)

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} scenes")
        scene = make_scene(scene_seed(self.seed, index), *self.size)
        item = {
            "image": scene.image,
            "mask": scene.mask,
            "depth": scene.depth,
            "caption": scene.caption,
            "path": f"synthetic://{self.seed}/{index}",
        }
        if self.normals:
            item["normals"] = scene.normals
        return self.transform(item) if self.transform is not None else item


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"480x640"``) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise RequestError(f"size {text!r} is not HxW, e.g. 480x640")
    return int(parts[0]), int(parts[1])
