"""Turning a simulated episode into an OpenScene log pickle plus its sensor blobs (spec §1.2, §1.3).

A log is written as a whole or not at all: its sensor folder is filled under a temporary name and moved into
place, then the pickle is written to a temporary file and moved into place last, so a reader that sees the
pickle also sees every image and point cloud it names. The pickle holds builtins and numpy arrays only, so
the restricted unpickler of `irlvla_env.navsim.safe_pickle` reads it.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from irlvla_env.navsim.dataclasses import CAMERA_KEYS
from irlvla_env.navsim.geometry import quaternion_from_yaw, wrap_angle
from irlvla_env.navsim.pcd import write_pcd
from irlvla_env.scoring.route import driving_command, one_hot_command
from irlvla_env.synthetic.episode import STEPS_PER_FRAME, Episode
from irlvla_env.synthetic.render import SensorRenderer
from irlvla_env.synthetic.actors import token

ANNOTATION_RANGE = 100.0  # [m] boxes farther from the ego are not annotated
FRAMES_PER_SCENE = 40  # a nuPlan "scene" is a ~20 s chunk of a log
LIDAR_DIR = "MergedPointCloud"


@dataclass(frozen=True)
class LogIdentity:
    """Names and clocks of one log."""

    log_name: str
    log_token: str
    vehicle_name: str
    map_location: str
    start_us: int  # timestamp of the first keyframe [µs]
    log_index: int


def transform(rotation_wxyz: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 homogeneous matrix of a yaw-only quaternion `[w, x, y, z]` and a translation."""
    w, x, y, z = rotation_wxyz
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, translation
    return out


def build_frames(
    episode: Episode, ident: LogIdentity, map_api: object, rig: dict, seed_key: str
) -> list[dict]:
    """The frame dicts of one log, every key of spec §1.3, in temporal order."""
    tokens = [token(seed_key, "frame", i) for i in range(len(episode.frames))]
    route = [str(rb) for rb in episode.route_roadblocks]
    lidar2ego_t, lidar2ego_q = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
    lidar2ego = transform(lidar2ego_q, lidar2ego_t)
    frames = []
    for i, objects in enumerate(episode.frames):
        x, y, yaw, v, a_lon, yaw_rate = episode.ego_states[i * STEPS_PER_FRAME]
        yaw = float(wrap_angle(yaw))
        q = quaternion_from_yaw(yaw)
        translation = np.array([x, y, 0.0])
        ego2global = transform(q, translation)
        ego_pose = np.array([x, y, yaw])
        command = driving_command(map_api, route, ego_pose)
        a_lat = v * yaw_rate
        can_bus = np.array([x, y, 0.0, *q, a_lon, a_lat, 0.0, v, 0.0, 0.0, 0.0, 0.0, yaw_rate, 0.0, 0.0])
        chunk = i // FRAMES_PER_SCENE
        frames.append({
            "token": tokens[i],
            "frame_idx": i % FRAMES_PER_SCENE,
            "timestamp": int(ident.start_us + i * 500_000),
            "log_name": ident.log_name,
            "log_token": ident.log_token,
            "scene_name": f"log-{ident.log_index:04d}-scene-{chunk:04d}",
            "scene_token": token(seed_key, "scene", chunk),
            "map_location": ident.map_location,
            "roadblock_ids": list(route),
            "vehicle_name": ident.vehicle_name,
            "can_bus": can_bus,
            "lidar_path": f"{ident.log_name}/{LIDAR_DIR}/{tokens[i]}.pcd",
            "lidar2ego_translation": lidar2ego_t.copy(),
            "lidar2ego_rotation": [float(c) for c in lidar2ego_q],
            "ego2global_translation": translation,
            "ego2global_rotation": q,
            "ego2global": ego2global,
            "lidar2ego": lidar2ego.copy(),
            "lidar2global": ego2global @ lidar2ego,
            "ego_dynamic_state": [float(v), 0.0, float(a_lon), float(a_lat)],
            "traffic_lights": [(int(c), bool(red)) for c, red in objects.traffic_lights],
            "driving_command": one_hot_command(command).astype(np.int64),
            "cams": {
                key: rig[key].as_cam_dict(f"{ident.log_name}/{key}/{tokens[i]}.jpg") for key in CAMERA_KEYS
            },
            "sample_prev": tokens[i - 1] if i > 0 else None,
            "sample_next": tokens[i + 1] if i + 1 < len(tokens) else None,
            "anns": _annotations(objects, ego_pose, seed_key, i),
        })  # fmt: skip
    return frames


def _annotations(objects: object, ego_pose: np.ndarray, seed_key: str, frame: int) -> dict:
    """Boxes of one keyframe in the ego frame; headings relative and deliberately not wrapped (spec §1.3)."""
    boxes = objects.boxes
    offset = boxes[:, :2] - ego_pose[:2]
    keep = np.linalg.norm(offset, axis=1) <= ANNOTATION_RANGE
    c, s = np.cos(ego_pose[2]), np.sin(ego_pose[2])
    local = np.column_stack([c * offset[:, 0] + s * offset[:, 1], -s * offset[:, 0] + c * offset[:, 1]])
    vel = objects.velocities
    local_vel = np.column_stack([c * vel[:, 0] + s * vel[:, 1], -s * vel[:, 0] + c * vel[:, 1], np.zeros(len(vel))])
    # Both yaws in (-pi, pi] as nuPlan stores them; their difference is left unwrapped, as OpenScene does.
    relative = wrap_angle(boxes[:, 2]) - wrap_angle(ego_pose[2])
    gt = np.column_stack([local, boxes[:, 5] / 2.0, boxes[:, 3], boxes[:, 4], boxes[:, 5], relative])
    idx = np.flatnonzero(keep)
    tracks = [objects.track_tokens[j] for j in idx]
    return {
        "gt_boxes": gt[idx].reshape(-1, 7),
        "gt_names": np.array([objects.names[j] for j in idx], dtype=str).reshape(-1),
        "gt_velocity_3d": local_vel[idx].reshape(-1, 3),
        "instance_tokens": [token(seed_key, "box", frame, t) for t in tracks],
        "track_tokens": tracks,
    }


def write_sensors(frames: list[dict], renderer: SensorRenderer, folder: Path, rng: np.random.Generator, jpeg_quality: int) -> None:
    """Render and write the 8 camera JPEGs and the merged point cloud of every frame under `folder`."""
    for frame in frames:
        pose = np.array([frame["ego2global_translation"][0], frame["ego2global_translation"][1],
                         _yaw(frame["ego2global_rotation"])])  # fmt: skip
        boxes, names = frame["anns"]["gt_boxes"], list(frame["anns"]["gt_names"])
        images = renderer.render_cameras(pose, boxes, names, traffic_lights=frame["traffic_lights"])
        for key, image in images.items():
            path = folder / Path(frame["cams"][key]["data_path"]).relative_to(frame["log_name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, format="JPEG", quality=jpeg_quality)
        points = renderer.render_lidar(pose, boxes, names, rng)
        write_pcd(folder / Path(frame["lidar_path"]).relative_to(frame["log_name"]), points)


def _yaw(q: np.ndarray) -> float:
    w, _x, _y, z = q
    return float(2.0 * np.arctan2(z, w))


def write_log(frames: list[dict], logs_dir: Path, sensors_dir: Path, render: object | None) -> Path:
    """Write one log atomically: sensors (if `render(folder)` is given) into place, then the pickle.

    :param render: called with a temporary folder to fill with the log's sensor blobs, or None.
    """
    log_name = frames[0]["log_name"]
    logs_dir.mkdir(parents=True, exist_ok=True)
    if render is not None:
        sensors_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{log_name}.", dir=sensors_dir))
        try:
            render(tmp_dir)
            final = sensors_dir / log_name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp_dir, final)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    fd, tmp = tempfile.mkstemp(prefix=f".{log_name}.", suffix=".pkl", dir=logs_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(frames, fh, protocol=4)
        os.replace(tmp, logs_dir / f"{log_name}.pkl")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return logs_dir / f"{log_name}.pkl"
