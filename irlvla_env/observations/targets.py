"""Training targets for 3-D reasoning (TransFuser's auxiliary targets, spec §2.4).

These read the privileged `Scene` (map and annotations), so they serve target builders and reward-model
labels only, never a policy's input.

BEV layout matches `lidar_bev.py`: the driving direction is up, row 0 is the front edge (largest x), column 0
the left edge (largest y). The default extent is TransFuser's: 128x256 cells of 0.25 m, from the rear axle
32 m forward and 32 m to each side (`x_min=0`); `x_min=None` centres the map on the rear axle instead.
"""

from __future__ import annotations

import numpy as np
import shapely
from PIL import Image, ImageDraw

from irlvla_env.navsim.dataclasses import Annotations, Scene
from irlvla_env.navsim.geometry import wrap_angle
from irlvla_env.navsim.map_api import SemanticMapLayer

BEV_CLASSES = ("background", "road", "walkway", "centerline", "static_object", "vehicle", "pedestrian")
STATIC_OBJECT_NAMES = ("czone_sign", "barrier", "traffic_cone", "generic_object")
CENTERLINE_WIDTH = 0.5  # [m] drawn width of lane centerlines


def _box_footprints(boxes: np.ndarray) -> np.ndarray:
    """Footprint corners `(N, 4, 2)` of boxes `(N, >=7)` `[x, y, z, l, w, h, heading]`."""
    half = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    local = half[None] * boxes[:, None, 3:5]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1] + boxes[:, None, 0]
    y = s * local[..., 0] + c * local[..., 1] + boxes[:, None, 1]
    return np.stack([x, y], axis=-1)


def rasterize_bev_semantics(
    map_api,
    ego_pose: np.ndarray,
    boxes: np.ndarray,
    names: list[str],
    size: tuple[int, int] = (128, 256),
    resolution: float = 0.25,
    x_min: float | None = 0.0,
) -> np.ndarray:
    """uint8 `(H, W)` class ids (`BEV_CLASSES`) around a global rear-axle `ego_pose`; boxes in its ego frame.

    Classes are painted in id order, so a later class covers an earlier one where they overlap.
    """
    height, width = int(size[0]), int(size[1])
    x_max = height * resolution / 2.0 if x_min is None else x_min + height * resolution
    y_max = width * resolution / 2.0
    pose = np.asarray(ego_pose, dtype=np.float64).reshape(3)
    c, s = np.cos(pose[2]), np.sin(pose[2])

    def pixels(coords_ego: np.ndarray) -> list[float]:
        """Ego-frame `(K, 2)` -> flat PIL `(X=col, Y=row)` list; PIL puts pixel centres at integers."""
        cols = (y_max - coords_ego[:, 1]) / resolution - 0.5
        rows = (x_max - coords_ego[:, 0]) / resolution - 0.5
        return np.stack([cols, rows], axis=1).ravel().tolist()

    def to_ego(coords: np.ndarray) -> np.ndarray:
        d = np.asarray(coords, dtype=np.float64)[:, :2] - pose[:2]
        return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)

    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    corners = np.array([[x_max, y_max], [x_max - height * resolution, -y_max]])
    radius = float(np.abs(corners).max() * np.sqrt(2.0))
    layers = [SemanticMapLayer.LANE, SemanticMapLayer.INTERSECTION, SemanticMapLayer.WALKWAYS,
              SemanticMapLayer.LANE_CONNECTOR]  # fmt: skip
    nearby = map_api.get_proximal_map_objects(pose[:2], radius, layers)

    def objects(layer: SemanticMapLayer) -> list:
        return [map_api.get_map_object(i, layer) for i in nearby[layer]]

    def fill_polygons(geometries: list, label: int) -> None:
        for geometry in geometries:
            for part in getattr(geometry, "geoms", [geometry]):
                if part.is_empty:
                    continue
                draw.polygon(pixels(to_ego(np.asarray(part.exterior.coords))), fill=label)
                for hole in part.interiors:
                    draw.polygon(pixels(to_ego(np.asarray(hole.coords))), fill=0)

    road = [o.polygon for o in objects(SemanticMapLayer.LANE)] + objects(SemanticMapLayer.INTERSECTION)
    fill_polygons(road, BEV_CLASSES.index("road"))
    fill_polygons(objects(SemanticMapLayer.WALKWAYS), BEV_CLASSES.index("walkway"))
    # Centerlines as flat-capped buffers: a PIL line of even pixel width sits half a pixel off to one side.
    lanes = objects(SemanticMapLayer.LANE) + objects(SemanticMapLayer.LANE_CONNECTOR)
    paths = [shapely.LineString(to_ego(np.asarray(lane.baseline_path.coords))) for lane in lanes]
    strips = shapely.buffer(np.array(paths, dtype=object), CENTERLINE_WIDTH / 2, cap_style="flat") if paths else []
    for strip in strips:
        for part in getattr(strip, "geoms", [strip]):
            if not part.is_empty:
                draw.polygon(pixels(np.asarray(part.exterior.coords)), fill=BEV_CLASSES.index("centerline"))

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    names = np.asarray(names, dtype=object)
    footprints = _box_footprints(boxes)
    box_classes = (("static_object", STATIC_OBJECT_NAMES), ("vehicle", ("vehicle",)), ("pedestrian", ("pedestrian",)))
    for label, wanted in box_classes:
        for footprint in footprints[np.isin(names, wanted)]:
            draw.polygon(pixels(footprint), fill=BEV_CLASSES.index(label))
    return np.asarray(image, dtype=np.uint8)


def bev_semantic_map(
    scene: Scene, size: tuple[int, int] = (128, 256), resolution: float = 0.25, x_min: float | None = 0.0
) -> np.ndarray:
    """uint8 `(H, W)` BEV semantic map of the scene's current frame (classes in `BEV_CLASSES`)."""
    frame = scene.frames[scene.current_index]
    annotations = frame.annotations
    return rasterize_bev_semantics(scene.map_api, frame.ego_status.ego_pose, annotations.boxes,
                                   list(annotations.names), size, resolution, x_min)  # fmt: skip


def agent_box_targets(
    annotations: Annotations, max_agents: int = 30, bev_range: float = 32.0
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest vehicles within `+-bev_range` of the rear axle, TransFuser's agent targets.

    :returns: `boxes` float32 `(max_agents, 5)` `[x, y, heading, length, width]` (ego frame, heading wrapped),
        zero-padded, nearest first; `valid` bool `(max_agents,)`.
    """
    boxes = np.asarray(annotations.boxes, dtype=np.float64).reshape(-1, 7)
    names = np.asarray(annotations.names, dtype=object)
    keep = (names == "vehicle") & (np.abs(boxes[:, 0]) <= bev_range) & (np.abs(boxes[:, 1]) <= bev_range)
    chosen = boxes[keep]
    chosen = chosen[np.argsort(np.hypot(chosen[:, 0], chosen[:, 1]), kind="stable")][:max_agents]
    out = np.zeros((max_agents, 5), dtype=np.float32)
    columns = [chosen[:, 0], chosen[:, 1], wrap_angle(chosen[:, 6]), chosen[:, 3], chosen[:, 4]]
    out[: len(chosen)] = np.column_stack(columns)
    valid = np.zeros(max_agents, dtype=bool)
    valid[: len(chosen)] = True
    return out, valid
