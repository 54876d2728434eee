"""Fast synthetic camera images and LiDAR sweeps from map geometry and 3-D boxes, at any ego pose.

Why the design looks like this: the world is flat (ground = ego z = 0) and the sensors are rigidly mounted, so
where each camera pixel and each LiDAR ray meets the ground is a constant of the rig. The renderer therefore
precomputes those ground hits once, and per ego pose only (1) rasterises the nearby map into an ego-frame
*material* raster with PIL, (2) looks every ground hit up in it (colour for cameras, reflectivity for LiDAR),
and (3) draws (`_draw_boxes`) or ray-casts (`lidar_cast.py`) the few 3-D boxes. Near-plane clipping is only needed for box faces; the ground never
needs it. Frames follow `sensors.py`: ego = lidar, x forward, y left, z up; cameras are OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from irlvla_env.navsim.geometry import global_to_local
from irlvla_env.synthetic.lidar_cast import LidarCaster
from irlvla_env.synthetic.render_map import MATERIALS, RenderMap
from irlvla_env.synthetic.sensors import CameraSpec, LidarSpec, default_rig

__all__ = ["RenderMap", "SensorRenderer", "render_cameras", "render_lidar", "CLASS_COLORS"]

# Camera colour [RGB] and LiDAR reflectivity [0-255] of each material id (index = MATERIALS value).
MATERIAL_COLORS = np.array(
    [[96, 110, 78], [72, 72, 76], [150, 146, 138], [92, 92, 96], [232, 232, 226], [236, 236, 230],
     [232, 232, 226], [222, 186, 60], [240, 240, 234]], dtype=np.float32,
)  # fmt: skip
MATERIAL_INTENSITY = np.array([12.0, 8.0, 20.0, 10.0, 70.0, 90.0, 90.0, 80.0, 90.0], dtype=np.float32)
if not len(MATERIAL_COLORS) == len(MATERIAL_INTENSITY) == len(MATERIALS):
    raise RuntimeError("render.py: MATERIAL_COLORS / MATERIAL_INTENSITY must have one row per render_map.MATERIALS")

CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "vehicle": (40, 90, 200),
    "pedestrian": (220, 60, 60),
    "bicycle": (230, 150, 30),
    "traffic_cone": (250, 110, 0),
    "barrier": (200, 200, 40),
    "czone_sign": (240, 90, 170),
    "generic_object": (150, 80, 200),
}
UNKNOWN_CLASS_COLOR = (128, 128, 128)
SIGNAL_COLORS = {True: (235, 35, 30), False: (40, 210, 70)}  # is_red -> RGB (navsim stores only red / not red)
SIGNAL_HEAD_SIZE = np.array([0.35, 0.35, 1.0])  # [m] length, width, height of a light head
SIGNAL_HEAD_HEIGHT = 5.0  # [m] of the head's centre above the road
SKY_TOP, SKY_HORIZON, FOG = np.array([70, 120, 190.0]), np.array([185, 205, 225.0]), np.array([170, 180, 185.0])
LIGHT_DIRECTION = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])
NEAR_PLANE = 0.15  # [m] box faces are clipped to camera z >= this
NOISE_CELL = 0.25  # [m] world-anchored ground texture cell (a 256-cell tile repeats every 64 m)
NOISE_LEVELS, FOG_LEVELS, NOISE_AMPLITUDE = 16, 32, 0.06

# Box corners (unit box, centred; index = 4 ix + 2 iy + iz) and the faces +x, -x, +y, -y, +z, -z as corner rings.
_UNIT_CORNERS = np.array([[sx, sy, sz] for sx in (-0.5, 0.5) for sy in (-0.5, 0.5) for sz in (-0.5, 0.5)])
_FACES = np.array([[4, 6, 7, 5], [0, 1, 3, 2], [2, 3, 7, 6], [0, 4, 5, 1], [1, 5, 7, 3], [0, 2, 6, 4]])
_FACE_NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners `(N, 8, 3)` of boxes `(N, 7)` `[x, y, z, l, w, h, heading]` (z = box centre height)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    local = _UNIT_CORNERS[None] * boxes[:, None, 3:6]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1] + boxes[:, None, 0]
    y = s * local[..., 0] + c * local[..., 1] + boxes[:, None, 1]
    return np.stack([x, y, local[..., 2] + boxes[:, None, 2]], axis=-1)


def clip_polygon_near(points_cam: np.ndarray, near: float = NEAR_PLANE) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon `(K, 3)` to `z >= near`; may return 0 vertices."""
    out = []
    for i in range(len(points_cam)):
        a, b = points_cam[i], points_cam[(i + 1) % len(points_cam)]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (near - a[2]) / (b[2] - a[2]) * (b - a))
    return np.array(out).reshape(-1, 3)


def _ground_color_table() -> np.ndarray:
    """uint8 RGB `(FOG_LEVELS * NOISE_LEVELS * len(MATERIALS), 3)` indexed by (haze, texture, material).

    One table lookup per pixel replaces float blending, which keeps a 256x144 camera well under a millisecond.
    """
    fog = np.linspace(0.0, 1.0, FOG_LEVELS)[:, None, None, None]
    noise = np.linspace(1 - NOISE_AMPLITUDE, 1 + NOISE_AMPLITUDE, NOISE_LEVELS)[None, :, None, None]
    colors = MATERIAL_COLORS[None, None].astype(np.float64) * noise * (1.0 - fog) + FOG * fog
    return np.clip(np.round(colors), 0, 255).astype(np.uint8).reshape(-1, 3)


@dataclass
class _BoxFaces:
    """Per-frame, camera-independent box geometry: corners, face normals and centres, shaded colours."""

    corners: np.ndarray  # (N, 8, 3) ego frame
    normals: np.ndarray  # (N, 6, 3)
    centers: np.ndarray  # (N, 6, 3)
    fills: list[list[tuple[int, int, int]]]  # (N, 6) RGB
    edges: list[list[tuple[int, int, int]]]  # (N, 6) darker outline RGB

    @classmethod
    def build(cls, boxes: np.ndarray, colors: np.ndarray) -> "_BoxFaces":
        """:param boxes: `(N, 7)` ego frame. :param colors: `(N, 3)` unshaded RGB."""
        corners = box_corners(boxes)
        c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        zeros, ones = np.zeros_like(c), np.ones_like(c)
        rows = ([c, s, zeros], [-s, c, zeros], [zeros, zeros, ones])
        rot = np.stack([np.stack(row, -1) for row in rows], 1)  # (N, 3, 3) box -> ego, transposed
        normals = np.einsum("fk,nkj->nfj", _FACE_NORMALS, rot)
        light = 0.55 + 0.45 * np.clip(normals @ LIGHT_DIRECTION, 0.0, 1.0)  # (N, 6)
        fills = np.clip(np.asarray(colors, dtype=np.float64).reshape(-1, 1, 3) * light[..., None], 0, 255).astype(int)
        return cls(
            corners=corners,
            normals=normals,
            centers=corners[:, _FACES].mean(axis=2),
            fills=[[tuple(face) for face in box] for box in fills.tolist()],
            edges=[[tuple(face) for face in box] for box in (fills * 0.6).astype(int).tolist()],
        )


@dataclass
class _CameraGround:
    """Per-camera constants: background image and where each ground pixel hits the ground (ego frame)."""

    spec: CameraSpec
    background: np.ndarray  # (H, W, 3) uint8 sky and far haze
    pixel_index: np.ndarray  # (n,) flat pixel index of the ground pixels inside the raster
    hits: np.ndarray  # (n, 2) ground hit [m], ego frame
    hits32: np.ndarray  # (n, 2) the same, float32, for the texture lookup
    fog_key: np.ndarray  # (n,) int32 haze level, pre-multiplied into the colour-table key
    camera_center: np.ndarray  # (3,) ego frame
    frustum: np.ndarray  # (4, 3) inward normals of the left, right, top, bottom planes (camera frame)


class SensorRenderer:
    """Renders the 8 cameras and the LiDAR of a `default_rig` (or any rig) over one `RenderMap`.

    :param render_map: global-frame map geometry.
    :param rig: camera name -> spec; default :func:`default_rig`.
    :param lidar: LiDAR spec; default :class:`LidarSpec`.
    :param seed: seeds the LiDAR noise generator used when `render_lidar` gets no `rng`.
    :param raster_half_extent: half-width of the ego-centred material raster [m]; ground beyond is haze.
    :param raster_resolution: material raster cell [m].
    """

    def __init__(
        self,
        render_map: RenderMap,
        rig: dict[str, CameraSpec] | None = None,
        lidar: LidarSpec | None = None,
        seed: int = 0,
        raster_half_extent: float = 64.0,
        raster_resolution: float = 0.125,
    ) -> None:
        self.map = render_map
        self.rig = default_rig() if rig is None else rig
        self.lidar = LidarSpec() if lidar is None else lidar
        self.rng = np.random.default_rng(seed)
        self.half_extent = float(raster_half_extent)
        self.resolution = float(raster_resolution)
        self.raster_size = int(np.ceil(2.0 * self.half_extent / self.resolution))
        self._noise_tile = np.random.default_rng(1234).integers(0, NOISE_LEVELS, size=(256, 256)).astype(np.int32)
        self._color_table = _ground_color_table()
        self._cameras = {name: self._camera_ground(spec) for name, spec in self.rig.items()}
        self._lidar = LidarCaster(self.lidar)
        self._raster_key: tuple[float, float, float] | None = None
        self._raster: np.ndarray | None = None

    # ------------------------------------------------------------------------------------ static precompute
    def _raster_index(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer `(row, col)` of ego-frame points in the material raster (row <-> y, col <-> x)."""
        col = np.floor((xy[..., 0] + self.half_extent) / self.resolution).astype(np.int64)
        row = np.floor((xy[..., 1] + self.half_extent) / self.resolution).astype(np.int64)
        return row, col

    def _camera_ground(self, spec: CameraSpec) -> _CameraGround:
        rays = spec.pixel_rays().reshape(-1, 3)
        origin = spec.sensor2lidar_translation
        elevation = rays[:, 2] / np.linalg.norm(rays, axis=1)
        sky = np.clip(elevation / 0.35, 0.0, 1.0)[:, None]
        background = np.where(elevation[:, None] > 0, SKY_HORIZON * (1 - sky) + SKY_TOP * sky, FOG)
        down = rays[:, 2] < -1e-9
        scale = np.where(down, -origin[2] / np.where(down, rays[:, 2], -1.0), np.inf)
        hits = origin[:2] + scale[:, None] * rays[:, :2]
        inside = down & np.all(np.abs(hits) < self.half_extent - self.resolution, axis=1)
        distance = np.linalg.norm(hits[inside] - origin[:2], axis=1)
        fog = np.clip((distance - 0.45 * self.half_extent) / (0.55 * self.half_extent), 0.0, 1.0) ** 1.5
        fog_level = np.round(fog * (FOG_LEVELS - 1)).astype(np.int32)
        k, (w, h) = spec.intrinsics, spec.image_size
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        frustum = np.array([[fx, 0, cx], [-fx, 0, w - cx], [0, fy, cy], [0, -fy, h - cy]])  # u>=0, u<=w, v>=0, v<=h
        return _CameraGround(
            spec=spec,
            background=background.reshape(spec.height, spec.width, 3).astype(np.uint8),
            pixel_index=np.flatnonzero(inside),
            hits=hits[inside],
            hits32=hits[inside].astype(np.float32),
            fog_key=fog_level * (NOISE_LEVELS * len(MATERIALS)),
            camera_center=np.asarray(origin, dtype=np.float64),
            frustum=frustum,
        )

    # ------------------------------------------------------------------------------------- material raster
    def material_raster(self, ego_pose: np.ndarray) -> np.ndarray:
        """uint8 `(S, S)` material ids around the ego (row <-> ego y, col <-> ego x); cached for the last pose."""
        pose = np.asarray(ego_pose, dtype=np.float64).reshape(3)
        key = (float(pose[0]), float(pose[1]), float(pose[2]))
        if key != self._raster_key:
            self._raster = self._rasterise(pose)
            self._raster_key = key
        return self._raster

    def _rasterise(self, pose: np.ndarray) -> np.ndarray:
        image = Image.new("L", (self.raster_size, self.raster_size), int(MATERIALS["terrain"]))
        draw = ImageDraw.Draw(image)
        c, s = np.cos(pose[2]), np.sin(pose[2])
        # Global -> raster pixel coordinates in one affine map (PIL puts pixel centres at integers).
        rot = np.array([[c, -s], [s, c]]) / self.resolution
        offset = (self.half_extent / self.resolution - 0.5) - pose[:2] @ rot

        def to_pixels(coords: np.ndarray) -> list[float]:
            return (coords @ rot + offset).ravel().tolist()

        radius = self.half_extent * np.sqrt(2.0)
        for layer in self.map.layers:
            material = int(MATERIALS[layer.material])
            width = max(1, int(round(layer.width / self.resolution)))
            for ring, is_hole in layer.query(pose[:2], radius):
                if layer.is_area:
                    draw.polygon(to_pixels(ring), fill=int(MATERIALS["terrain"]) if is_hole else material)
                else:
                    draw.line(to_pixels(ring), fill=material, width=width)
        return np.asarray(image)

    def _ground_lookup(self, raster: np.ndarray, hits: np.ndarray) -> np.ndarray:
        """Material ids of ego-frame ground points `(n, 2)` (terrain outside the raster)."""
        row, col = self._raster_index(hits)
        ok = (row >= 0) & (row < self.raster_size) & (col >= 0) & (col < self.raster_size)
        out = np.full(len(hits), MATERIALS["terrain"], dtype=np.uint8)
        out[ok] = raster[row[ok], col[ok]]
        return out

    # --------------------------------------------------------------------------------------------- cameras
    def render_cameras(
        self,
        ego_pose: np.ndarray,
        boxes: np.ndarray,
        names: list[str],
        cameras: list[str] | None = None,
        traffic_lights: Sequence[tuple[int | str, bool]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Images uint8 `(H, W, 3)` per camera name.

        :param ego_pose: `(3,)` global rear-axle `(x, y, heading)`.
        :param boxes: `(N, 7)` ego-frame `[x, y, z, l, w, h, heading]`.
        :param names: `N` class names (navsim's `gt_names`), for colours.
        :param cameras: subset of rig names (default: all).
        :param traffic_lights: the frame's `(lane_connector_id, is_red)` list; each connector with a known
            signal head gets a red or green light box above its entry.
        """
        pose = np.asarray(ego_pose, dtype=np.float64).reshape(3)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        if len(names) != len(boxes):
            raise ValueError(f"render_cameras: {len(boxes)} boxes but {len(names)} names")
        unknown = [name for name in (cameras or []) if name not in self._cameras]
        if unknown:
            raise KeyError(f"unknown camera(s) {unknown}; the rig has {sorted(self._cameras)}")
        raster = self.material_raster(pose)
        colors = np.array([CLASS_COLORS.get(n, UNKNOWN_CLASS_COLOR) for n in names], dtype=np.float64).reshape(-1, 3)
        if traffic_lights:
            lights, light_colors = self._signal_boxes(pose, traffic_lights)
            boxes, colors = np.vstack([boxes, lights]), np.vstack([colors, light_colors])
        faces = _BoxFaces.build(boxes, colors)
        c, s = np.cos(pose[2]), np.sin(pose[2])
        rot = np.array([[c, s], [-s, c]], dtype=np.float32)
        # World-anchored texture: the tile repeats every 256 cells, so only the pose modulo that period matters;
        # two extra periods keep every ground point's coordinate positive, so truncation equals floor.
        period = 256 * NOISE_CELL
        margin = np.ceil(self.half_extent * np.sqrt(2.0) / period + 1.0) * period
        shift = (np.mod(pose[:2], period) + margin).astype(np.float32)
        out = {}
        for name in cameras or list(self._cameras):
            cam = self._cameras[name]
            image = cam.background.copy()
            cell = ((cam.hits32 @ rot + shift) * (1.0 / NOISE_CELL)).astype(np.int32) & 255
            noise = self._noise_tile[cell[:, 0], cell[:, 1]]
            key = cam.fog_key + noise * len(MATERIALS) + self._ground_lookup(raster, cam.hits)
            image.reshape(-1, 3)[cam.pixel_index] = np.take(self._color_table, key, axis=0)
            if len(faces.corners):
                image = self._draw_boxes(image, cam, faces)
            out[name] = image
        return out

    def _signal_boxes(
        self, pose: np.ndarray, traffic_lights: Sequence[tuple[int | str, bool]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ego-frame light-head boxes `(K, 7)` and their colours `(K, 3)` for the connectors with a status."""
        heads = self.map.signal_heads
        known = [(heads[str(cid)], bool(red)) for cid, red in traffic_lights if str(cid) in heads]
        if not known:
            return np.zeros((0, 7)), np.zeros((0, 3))
        world = np.array([head for head, _ in known])
        local = global_to_local(world, pose)
        boxes = np.column_stack([local[:, :2], np.full(len(known), SIGNAL_HEAD_HEIGHT),
                                 np.tile(SIGNAL_HEAD_SIZE, (len(known), 1)), local[:, 2]])  # fmt: skip
        return boxes, np.array([SIGNAL_COLORS[red] for _, red in known], dtype=np.float64)

    def _draw_boxes(self, image: np.ndarray, cam: _CameraGround, faces: "_BoxFaces") -> np.ndarray:
        """Shaded, back-face-culled, near-clipped box faces, far boxes first (painter's algorithm)."""
        spec = cam.spec
        corners_cam = spec.ego_to_camera(faces.corners)  # (N, 8, 3)
        # A box is invisible if all its corners lie behind the near plane or outside one frustum side plane.
        outside = np.any(np.all(corners_cam @ cam.frustum.T < 0, axis=1), axis=1)
        visible = ~outside & (corners_cam[..., 2].max(axis=1) > NEAR_PLANE)
        if not visible.any():
            return image
        facing = np.einsum("nfk,nfk->nf", faces.normals, faces.centers - cam.camera_center) < 0
        distance = np.linalg.norm(faces.corners.mean(axis=1)[:, :2] - cam.camera_center[:2], axis=1)
        canvas = Image.fromarray(image)
        draw = ImageDraw.Draw(canvas)
        for i in np.flatnonzero(visible)[np.argsort(-distance[visible])]:
            for f in np.flatnonzero(facing[i]):
                polygon = corners_cam[i][_FACES[f]]
                if polygon[:, 2].min() < NEAR_PLANE:
                    polygon = clip_polygon_near(polygon)
                    if len(polygon) < 3:
                        continue
                draw.polygon(spec.project(polygon).ravel().tolist(), fill=faces.fills[i][f], outline=faces.edges[i][f])
        return np.asarray(canvas)

    # ----------------------------------------------------------------------------------------------- lidar
    def render_lidar(
        self,
        ego_pose: np.ndarray,
        boxes: np.ndarray,
        names: list[str],
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """One merged sweep, float32 `(6, N)`: rows `x, y, z, intensity, ring, lidar_id` in the ego frame.

        Rays hit the ground (z = 0, reflectivity from the material raster) and the boxes; the nearest hit
        within `max_range` wins, then range noise and random dropout are applied (see `lidar_cast.py`).

        :param rng: noise generator; default the renderer's own (seeded by `seed`, advancing per call).
        """
        pose = np.asarray(ego_pose, dtype=np.float64).reshape(3)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        if len(names) != len(boxes):
            raise ValueError(f"render_lidar: {len(boxes)} boxes but {len(names)} names")
        ground = MATERIAL_INTENSITY[self._ground_lookup(self.material_raster(pose), self._lidar.ground_hits)]
        return self._lidar.cast(boxes, names, ground, self.rng if rng is None else rng)


def render_cameras(
    render_map: RenderMap,
    ego_pose: np.ndarray,
    boxes: np.ndarray,
    names: list[str],
    cameras: list[str] | None = None,
    traffic_lights: Sequence[tuple[int | str, bool]] | None = None,
    **renderer_kwargs: object,
) -> dict[str, np.ndarray]:
    """One-shot :meth:`SensorRenderer.render_cameras` (build a `SensorRenderer` to render many poses)."""
    renderer = SensorRenderer(render_map, **renderer_kwargs)
    return renderer.render_cameras(ego_pose, boxes, names, cameras, traffic_lights)


def render_lidar(
    render_map: RenderMap,
    ego_pose: np.ndarray,
    boxes: np.ndarray,
    names: list[str],
    rng: np.random.Generator | None = None,
    **renderer_kwargs: object,
) -> np.ndarray:
    """One-shot :meth:`SensorRenderer.render_lidar`."""
    return SensorRenderer(render_map, **renderer_kwargs).render_lidar(ego_pose, boxes, names, rng)
