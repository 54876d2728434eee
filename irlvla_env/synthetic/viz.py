"""A one-page picture of a scene: the camera strip over a bird's-eye view of map, agents and ego motion.

Drawn in the ego frame of the current frame (x forward = up), so it reads like the TransFuser BEV: what the
agent sees, what the human did next. Uses matplotlib's Agg backend; nothing is shown on screen.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Polygon as PatchPolygon  # noqa: E402

from irlvla_env.navsim.dataclasses import AgentInput, Scene  # noqa: E402
from irlvla_env.navsim.geometry import global_to_local  # noqa: E402
from irlvla_env.navsim.map_api import SemanticMapLayer  # noqa: E402

BEV_RADIUS = 50.0  # [m]
CLASS_COLORS = {"vehicle": "#1f77b4", "pedestrian": "#d62728", "bicycle": "#9467bd"}
STATIC_COLOR = "#8c564b"
CAMERA_ORDER = ("cam_l0", "cam_f0", "cam_r0", "cam_b0")
MAP_STYLE = (  # layer, face colour, edge colour, z-order
    (SemanticMapLayer.WALKWAYS, "#d9d4c7", "none", 0),
    (SemanticMapLayer.CARPARK_AREA, "#c7d3e0", "none", 0),
    (SemanticMapLayer.ROADBLOCK, "#eeeeee", "none", 1),
    (SemanticMapLayer.INTERSECTION, "#e3e3e3", "#aaaaaa", 1),
    (SemanticMapLayer.LANE, "none", "#bbbbbb", 2),
    (SemanticMapLayer.LANE_CONNECTOR, "none", "#d8d8d8", 2),
    (SemanticMapLayer.CROSSWALK, "#fafafa", "#666666", 3),
)


def _to_local(points: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Global `(N, 2)` points → ego frame, then rotated so that ego forward points up in the plot."""
    poses = np.column_stack([points, np.zeros(len(points))])
    local = global_to_local(poses, origin)[:, :2]
    return np.column_stack([-local[:, 1], local[:, 0]])


def _box_outline(box: np.ndarray) -> np.ndarray:
    """Corners `(4, 2)` of an ego-frame box `[x, y, z, l, w, h, heading]`, plot-rotated."""
    x, y, _z, length, width, _h, heading = box
    c, s = np.cos(heading), np.sin(heading)
    corners = np.array([[length, width], [length, -width], [-length, -width], [-length, width]]) / 2.0
    pts = corners @ np.array([[c, s], [-s, c]]) + np.array([x, y])
    return np.column_stack([-pts[:, 1], pts[:, 0]])


def draw_bev(ax: plt.Axes, scene: Scene) -> None:
    """Map, boxes, ego history (grey) and the human future (green) in the current ego frame."""
    cur = scene.current_index
    origin = scene.frames[cur].ego_status.ego_pose
    layers = [layer for layer, *_ in MAP_STYLE]
    nearby = scene.map_api.get_proximal_map_objects(origin[:2], BEV_RADIUS * 1.5, layers)
    for layer, face, edge, z in MAP_STYLE:
        for object_id in nearby[layer]:
            geom = scene.map_api.get_geometry(object_id, layer)
            for part in getattr(geom, "geoms", [geom]):
                if part.is_empty:
                    continue
                pts = _to_local(np.asarray(part.exterior.coords)[:, :2], origin)
                ax.add_patch(PatchPolygon(pts, closed=True, facecolor=face, edgecolor=edge, lw=0.6, zorder=z))
    ann = scene.frames[cur].annotations
    for box, name in zip(ann.boxes, ann.names):
        color = CLASS_COLORS.get(name, STATIC_COLOR)
        ax.add_patch(PatchPolygon(_box_outline(box), closed=True, facecolor=color, alpha=0.7, zorder=5))
    ego = np.array([0.0 + 1.461, 0.0, 0.0, 5.176, 2.297, 1.777, 0.0])
    ax.add_patch(PatchPolygon(_box_outline(ego), closed=True, facecolor="#ff7f0e", zorder=6))
    past = np.array([f.ego_status.ego_pose for f in scene.frames[: cur + 1]])
    future = np.array([f.ego_status.ego_pose for f in scene.frames[cur:]])
    for poses, color, label in ((past, "#555555", "past"), (future, "#2ca02c", "human future")):
        pts = _to_local(poses[:, :2], origin)
        ax.plot(pts[:, 0], pts[:, 1], "-o", color=color, ms=3, lw=1.5, zorder=7, label=label)
    ax.set_xlim(-BEV_RADIUS, BEV_RADIUS)
    ax.set_ylim(-BEV_RADIUS * 0.6, BEV_RADIUS * 1.4)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="lower right", fontsize=7)


def render_scene(scene: Scene, agent_input: AgentInput | None, out: str | Path) -> Path:
    """Write the scene picture to `out` (PNG) and return its path."""
    out = Path(out)
    images = []
    if agent_input is not None:
        cams = agent_input.cameras[-1]
        images = [getattr(cams, name).image for name in CAMERA_ORDER if getattr(cams, name).image is not None]
    fig = plt.figure(figsize=(10, 10 if images else 8))
    grid = fig.add_gridspec(2 if images else 1, max(len(images), 1), height_ratios=[1, 4] if images else [1])
    for i, image in enumerate(images):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image)
        ax.set_title(CAMERA_ORDER[i].upper(), fontsize=8)
        ax.axis("off")
    bev = fig.add_subplot(grid[-1, :])
    draw_bev(bev, scene)
    command = ("left", "straight", "right", "unknown")[int(np.argmax(scene.frames[scene.current_index].ego_status.driving_command))]
    meta = scene.scene_metadata
    bev.set_title(f"{meta.initial_token}  {meta.map_name}  command: {command}", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
