"""Other road users and red lights over the 4 s scoring horizon, as arrays (spec §4.3).

navsim keeps 41 occupancy maps of shapely objects; we keep the same information as numpy arrays so that the
scorer can test K candidate rollouts against every object at every step in a few vectorised calls, and so that
traffic policies (log replay, IDM, constant velocity) can rewrite the vehicle rows without touching geometry.

Built from the ground-truth boxes of the current frame and the 8 future frames (2 Hz), interpolated linearly to
10 Hz (41 steps, 0 … 4 s). Quirks kept on purpose:
- a track observed in exactly one frame is present, unchanged, at all 41 steps (navsim's `start == end` path, U7);
  tracks observed in ≥ 2 frames exist only between their first and last observation;
- box size, type and the "first appearance" heading/speed (used by NC's stopped-track test and by TTC) come from
  the first observation;
- red lights come from the lane connectors of the *uncorrected* route (the scene's `roadblock_ids`), held
  constant between the 2 Hz frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import shapely

from irlvla_env.navsim.dataclasses import Annotations, Scene
from irlvla_env.navsim.geometry import local_to_global, rotate_vectors, wrap_angle

NUM_STEPS = 41  # 0.0 … 4.0 s at 10 Hz
STEP_S = 0.1
NUM_FUTURE_FRAMES = 8  # 4 s at 2 Hz
FRAME_S = 0.5
STEPS_PER_FRAME = 5
AGENT_TYPES = ("vehicle", "pedestrian", "bicycle")  # nuPlan `Agent`s; everything else is a static object
RED_LIGHT_PREFIX = "red_light_"


@dataclass
class Observation:
    """Tracks `T` and red-light polygons `L` over `NUM_STEPS` steps. Absent entries hold NaN.

    :ivar tokens: `(T,)` track tokens.
    :ivar types: `(T,)` category names (`vehicle`, `pedestrian`, `bicycle`, `traffic_cone`, `barrier`, ...).
    :ivar sizes: `(T, 2)` length, width at first observation.
    :ivar first_headings: `(T,)` global heading at first observation.
    :ivar first_speeds: `(T,)` speed at first observation (0 for static objects).
    :ivar present: `(S, T)` bool.
    :ivar centers: `(S, T, 2)` global box centres.
    :ivar headings: `(S, T)` global headings in (-pi, pi].
    :ivar velocities: `(S, T, 2)` global velocities.
    :ivar red_light_ids: `(L,)` lane-connector ids.
    :ivar red_light_polygons: `(L,)` shapely polygons of those connectors.
    :ivar red_light_active: `(S, L)` bool, whether each connector is red at each step.
    """

    tokens: np.ndarray
    types: np.ndarray
    sizes: np.ndarray
    first_headings: np.ndarray
    first_speeds: np.ndarray
    present: np.ndarray
    centers: np.ndarray
    headings: np.ndarray
    velocities: np.ndarray
    red_light_ids: np.ndarray
    red_light_polygons: np.ndarray
    red_light_active: np.ndarray

    def __post_init__(self) -> None:
        s, t = self.present.shape
        for name, shape in (
            ("tokens", (t,)), ("types", (t,)), ("sizes", (t, 2)), ("first_headings", (t,)), ("first_speeds", (t,)),
            ("centers", (s, t, 2)), ("headings", (s, t)), ("velocities", (s, t, 2)),
        ):  # fmt: skip
            if getattr(self, name).shape != shape:
                raise ValueError(f"Observation.{name} has shape {getattr(self, name).shape}, expected {shape}")
        n_lights = len(self.red_light_ids)
        if len(self.red_light_polygons) != n_lights or self.red_light_active.shape != (s, n_lights):
            raise ValueError(
                f"Observation red lights disagree: {n_lights} ids, {len(self.red_light_polygons)} polygons, "
                f"active {self.red_light_active.shape} (expected {(s, n_lights)})"
            )

    @property
    def num_steps(self) -> int:
        return self.present.shape[0]

    @property
    def num_tracks(self) -> int:
        return len(self.tokens)

    @property
    def is_agent(self) -> np.ndarray:
        """`(T,)` True for vehicles, pedestrians and bicycles (nuPlan `Agent`s)."""
        return np.isin(self.types, AGENT_TYPES)

    @property
    def is_vehicle(self) -> np.ndarray:
        return self.types == "vehicle"

    def corners(self) -> np.ndarray:
        """`(S, T, 4, 2)` box corners in the order front-left, rear-left, rear-right, front-right (NaN if absent)."""
        return box_corners(self.centers, self.headings, self.sizes[None, :, 0], self.sizes[None, :, 1])

    def without_tracks(self, drop: np.ndarray) -> "Observation":
        """A copy where the tracks flagged in `drop` `(T,)` are absent at every step (log replay uses this)."""
        drop = np.asarray(drop, dtype=bool)
        present = self.present & ~drop[None, :]
        centers = np.where(present[..., None], self.centers, np.nan)
        headings = np.where(present, self.headings, np.nan)
        velocities = np.where(present[..., None], self.velocities, np.nan)
        return replace(self, present=present, centers=centers, headings=headings, velocities=velocities)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for `np.savez` (strings as unicode arrays, polygons as a WKB buffer with offsets)."""
        out = {name: getattr(self, name) for name in _NUMERIC_FIELDS}
        out.update({name: getattr(self, name).astype(str) for name in _STRING_FIELDS})
        out["red_light_wkb"], out["red_light_wkb_offsets"] = geometries_to_arrays(self.red_light_polygons)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Observation":
        return cls(
            **{name: np.asarray(arrays[name]) for name in _NUMERIC_FIELDS},
            **{name: np.asarray(arrays[name]).astype(object) for name in _STRING_FIELDS},
            red_light_polygons=geometries_from_arrays(arrays["red_light_wkb"], arrays["red_light_wkb_offsets"]),
        )


_STRING_FIELDS = ("tokens", "types", "red_light_ids")
_NUMERIC_FIELDS = (
    "sizes", "first_headings", "first_speeds", "present", "centers", "headings", "velocities", "red_light_active",
)  # fmt: skip


def geometries_to_arrays(geometries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapely geometries as one uint8 WKB buffer and `(n + 1,)` offsets: plain arrays `np.savez` stores
    without pickle (and 8× smaller than hex strings)."""
    blobs = [shapely.to_wkb(g) for g in geometries]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(), offsets


def geometries_from_arrays(buffer: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`geometries_to_arrays`, as an object array."""
    raw = np.asarray(buffer, dtype=np.uint8).tobytes()
    out = np.empty(len(offsets) - 1, dtype=object)
    out[:] = [shapely.from_wkb(raw[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    return out


def box_corners(centers: np.ndarray, headings: np.ndarray, lengths: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Corners `(..., 4, 2)` (FL, RL, RR, FR) of oriented boxes; all inputs broadcast over the leading shape."""
    c, s = np.cos(headings), np.sin(headings)
    half_l, half_w = np.asarray(lengths) / 2.0, np.asarray(widths) / 2.0
    fwd = np.stack([c, s], axis=-1) * half_l[..., None]
    left = np.stack([-s, c], axis=-1) * half_w[..., None]
    centers = np.asarray(centers)
    return np.stack([centers + fwd + left, centers - fwd + left, centers - fwd - left, centers + fwd - left], axis=-2)


def _global_boxes(annotations: Annotations, ego_pose: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """`(N, 3)` global `(x, y, heading)` and `(N, 2)` global velocities; `ego_pose=None` means already global."""
    boxes = annotations.boxes
    poses = boxes[:, [0, 1, 6]]
    velocities = annotations.velocity_3d[:, :2]
    if ego_pose is None:
        return poses, velocities
    return local_to_global(poses, ego_pose), rotate_vectors(velocities, float(ego_pose[2]))


def _frames_of(scene: Scene) -> tuple[list[Annotations], list[np.ndarray | None], np.ndarray]:
    """Annotations, their ego poses (None = global) and times (s after t0) of t0 … t0 + 4 s.

    Times are nominal (`0.5 i`), as navsim's metric caching indexes frames, not timestamps.

    Synthetic scenes may stop early and continue in `extended_detections_tracks`, taken here as `Annotations` in
    the global frame (nuPlan's `DetectionsTracks` are global), one per further 0.5 s.
    """
    cur = scene.current_index
    frames = scene.frames[cur : cur + NUM_FUTURE_FRAMES + 1]
    annotations = [f.annotations for f in frames]
    poses: list[np.ndarray | None] = [f.ego_status.ego_pose for f in frames]
    missing = NUM_FUTURE_FRAMES + 1 - len(frames)
    extended = list(scene.extended_detections_tracks or [])[:missing]
    for i, ann in enumerate(extended):
        if not isinstance(ann, Annotations):
            raise ValueError(f"scene {scene.token}: extended_detections_tracks[{i}] is {type(ann).__name__}, "
                             "expected Annotations in the global frame")
        annotations.append(ann)
        poses.append(None)
    if len(annotations) < NUM_FUTURE_FRAMES + 1:
        raise ValueError(
            f"scene {scene.token} has {len(annotations) - 1} future frames; scoring needs {NUM_FUTURE_FRAMES} (4 s)"
        )
    return annotations, poses, FRAME_S * np.arange(len(annotations), dtype=np.float64)


def _interpolate_tracks(
    annotations: list[Annotations], poses: list[np.ndarray | None], frame_times: np.ndarray, step_times: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-track linear interpolation of `(x, y, heading, vx, vy)` from the 2 Hz frames to `step_times`."""
    order: dict[str, int] = {}
    first: dict[str, tuple[str, float, float, float]] = {}
    observations: dict[str, list[tuple[float, np.ndarray]]] = {}
    for ann, pose, t in zip(annotations, poses, frame_times):
        states, velocities = _global_boxes(ann, pose)
        for i, token in enumerate(ann.track_tokens):
            name = str(ann.names[i])
            is_agent = name in AGENT_TYPES
            velocity = velocities[i] if is_agent else np.zeros(2)  # static objects get zero velocity
            if token not in order:
                order[token] = len(order)
                first[token] = (name, ann.boxes[i, 3], ann.boxes[i, 4], float(np.hypot(*velocity)))
                observations[token] = []
            observations[token].append((t, np.array([*states[i], *velocity])))

    n_tracks, n_steps = len(order), len(step_times)
    present = np.zeros((n_steps, n_tracks), dtype=bool)
    values = np.full((n_steps, n_tracks, 5), np.nan)
    first_headings = np.zeros(n_tracks)
    for token, idx in order.items():
        times = np.array([t for t, _ in observations[token]])
        obs = np.stack([v for _, v in observations[token]])
        first_headings[idx] = wrap_angle(obs[0, 2])
        if len(times) == 1:  # [Q] inserted unchanged at every step
            present[:, idx] = True
            values[:, idx] = obs[0]
            continue
        obs[:, 2] = np.unwrap(obs[:, 2])
        inside = (step_times >= times[0]) & (step_times <= times[-1])
        present[inside, idx] = True
        for col in range(5):
            values[inside, idx, col] = np.interp(step_times[inside], times, obs[:, col])
    values[..., 2] = np.where(present, wrap_angle(values[..., 2]), np.nan)
    meta = [first[token] for token in order]
    return {
        "tokens": np.array(list(order), dtype=object),
        "types": np.array([m[0] for m in meta], dtype=object),
        "sizes": np.array([[m[1], m[2]] for m in meta], dtype=np.float64).reshape(n_tracks, 2),
        "first_headings": first_headings,
        "first_speeds": np.array([m[3] for m in meta], dtype=np.float64),
        "present": present,
        "centers": values[..., :2],
        "headings": values[..., 2],
        "velocities": values[..., 3:5],
    }


def route_lane_dict(map_api, roadblock_ids: list[str]) -> dict:
    """Id → lane or lane connector of the route's roadblocks (a roadblock id wins over a connector id), as
    navsim's metric caching builds it; later entries overwrite equal ids, whatever their layer."""
    out: dict = {}
    for rid in dict.fromkeys(str(r) for r in roadblock_ids):
        block = map_api.roadblocks.get(rid)
        edges = map_api.lanes if block is not None else map_api.lane_connectors
        block = block if block is not None else map_api.roadblock_connectors.get(rid)
        if block is None:
            continue
        for edge_id in block.interior_edges:
            out[str(edge_id)] = edges[edge_id]
    return out


def _red_lights(scene: Scene, frame_times: np.ndarray, step_times: np.ndarray) -> dict[str, np.ndarray]:
    """Red lights per step: every RED status whose id is a lane (connector) of the uncorrected route gives that
    object's polygon; statuses are held for the 0.5 s between frames (frames beyond the scene: last known)."""
    cur = scene.current_index
    route = route_lane_dict(scene.map_api, scene.frames[cur].roadblock_ids)
    frames = scene.frames[cur : cur + NUM_FUTURE_FRAMES + 1]
    statuses: list[list] = [f.traffic_lights for f in frames]
    statuses += list(scene.extended_traffic_light_data or [])[: len(frame_times) - len(statuses)]
    statuses += [statuses[-1]] * (len(frame_times) - len(statuses))
    red_per_frame = [{_light_id(c) for c, red in s if red} & route.keys() for s in statuses]
    order = list(route)
    ids = sorted(set().union(*red_per_frame), key=order.index)
    frame_of_step = np.minimum(np.arange(len(step_times)) // STEPS_PER_FRAME, len(frame_times) - 1)
    active = np.array([[lid in red_per_frame[f] for lid in ids] for f in frame_of_step], dtype=bool)
    polygons = np.empty(len(ids), dtype=object)
    polygons[:] = [route[lid].polygon for lid in ids]
    return {
        "red_light_ids": np.array(ids, dtype=object),
        "red_light_polygons": polygons,
        "red_light_active": active.reshape(len(step_times), len(ids)),
    }


def _light_id(value) -> str:
    """Traffic-light ids arrive as ints (log pickles) or strings; map ids are strings without `.0`."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def build_observation(scene: Scene) -> Observation:
    """The ground-truth observation of `scene` over t0 … t0 + 4 s at 10 Hz (spec §4.3)."""
    annotations, poses, frame_times = _frames_of(scene)
    step_times = np.arange(NUM_STEPS, dtype=np.float64) * STEP_S  # exact at the frame times (k = 5 i)
    tracks = _interpolate_tracks(annotations, poses, frame_times, step_times)
    lights = _red_lights(scene, frame_times, step_times)
    return Observation(**tracks, **lights)
