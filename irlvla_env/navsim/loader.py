"""OpenScene log pickles → NAVSIM scenes (spec §1.2–§1.3, §2.2).

`SceneLoader` reproduces navsim's `filter_scenes`: each log's frame list is cut into windows of
`num_history + num_future` frames every `frame_interval` frames; short windows are dropped, and so are windows
whose current frame has no route (when `has_route`) or whose token is not wanted. Scenes are built on demand
from the stored frame dicts, and sensors are read from disk only for the history frames and sensors that the
`SensorConfig` asks for.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from irlvla_env.navsim.dataclasses import (
    CAMERA_NAMES,
    AgentInput,
    Annotations,
    Camera,
    Cameras,
    EgoStatus,
    Frame,
    Lidar,
    Scene,
    SceneFilter,
    SceneMetadata,
    SensorConfig,
)
from irlvla_env.navsim.geometry import yaw_from_quaternion
from irlvla_env.navsim.map_api import LazyMap, canonical_location
from irlvla_env.navsim.pcd import read_pcd
from irlvla_env.navsim.safe_pickle import CorruptLogError, UnsafePickleError, load_pickle
from irlvla_env.paths import data_root as default_data_root
from irlvla_env.paths import maps_root as default_maps_root
from irlvla_env.paths import require_dir

# Keys every frame dict must carry (spec §1.3); `anns` is optional (absent in the private test split).
REQUIRED_FRAME_KEYS = (
    "token", "timestamp", "log_name", "scene_token", "map_location", "roadblock_ids", "ego2global_translation",
    "ego2global_rotation", "ego_dynamic_state", "traffic_lights", "driving_command", "cams", "lidar_path",
)  # fmt: skip
CAMERA_FIELDS = ("data_path", "sensor2lidar_rotation", "sensor2lidar_translation", "cam_intrinsic", "distortion")
ANNOTATION_KEYS = ("gt_boxes", "gt_names", "gt_velocity_3d", "instance_tokens", "track_tokens")


class LogFormatError(ValueError):
    """A log pickle that is not a list of frame dicts with the §1.3 keys; the message names file, frame and key."""


# ----------------------------------------------------------------------------------------- frame conversion
def ego_status_from_frame(frame: Mapping[str, Any]) -> EgoStatus:
    """Global rear-axle pose `(x, y, yaw)`; body-frame velocity/acceleration from `ego_dynamic_state`."""
    translation = np.asarray(frame["ego2global_translation"], dtype=np.float64)
    dynamic = np.asarray(frame["ego_dynamic_state"], dtype=np.float64)
    return EgoStatus(
        ego_pose=np.array([translation[0], translation[1], yaw_from_quaternion(frame["ego2global_rotation"])]),
        ego_velocity=dynamic[:2],
        ego_acceleration=dynamic[2:4],
        driving_command=np.asarray(frame["driving_command"]),
        in_global_frame=True,
    )


def annotations_from_frame(frame: Mapping[str, Any]) -> Annotations:
    """The boxes of one frame (ego frame of that frame); empty when the frame has no `anns`."""
    anns = frame.get("anns")
    if anns is None:
        return Annotations(np.zeros((0, 7)), [], np.zeros((0, 3)), [], [])
    return Annotations(
        boxes=np.asarray(anns["gt_boxes"], dtype=np.float64).reshape(-1, 7),
        names=[str(n) for n in anns["gt_names"]],
        velocity_3d=np.asarray(anns["gt_velocity_3d"], dtype=np.float64).reshape(-1, 3),
        instance_tokens=[str(t) for t in anns["instance_tokens"]],
        track_tokens=[str(t) for t in anns["track_tokens"]],
    )


def _sensor_file(sensor_blobs_path: Path, relative: str, sensor: str, token: str) -> Path:
    path = sensor_blobs_path / relative
    if not path.is_file():
        raise FileNotFoundError(f"sensor {sensor} of frame {token} not found: {path}")
    return path


def load_image(path: Path) -> np.ndarray:
    """A JPEG as uint8 `(H, W, 3)` RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def cameras_from_frame(
    frame: Mapping[str, Any], sensor_blobs_path: Path, config: SensorConfig, history_index: int | None
) -> Cameras:
    """Cameras requested at `history_index` (None = a future frame: none), others left empty as in navsim."""
    cams = frame["cams"]
    loaded = {}
    for name in CAMERA_NAMES:
        if history_index is None or not config.wants(name, history_index):
            continue
        key = name.upper()
        if key not in cams:
            raise LogFormatError(f"frame {frame['token']}: camera {key} requested but absent from its 'cams' dict")
        cam = cams[key]
        if missing := [f for f in CAMERA_FIELDS if f not in cam]:
            raise LogFormatError(f"frame {frame['token']}: camera {key} lacks key(s) {missing}")
        path = _sensor_file(sensor_blobs_path, cam["data_path"], key, frame["token"])
        loaded[name] = Camera(
            image=load_image(path),
            sensor2lidar_rotation=np.asarray(cam["sensor2lidar_rotation"], dtype=np.float64),
            sensor2lidar_translation=np.asarray(cam["sensor2lidar_translation"], dtype=np.float64),
            intrinsics=np.asarray(cam["cam_intrinsic"], dtype=np.float64),
            distortion=np.asarray(cam["distortion"], dtype=np.float64),
            camera_path=path,
        )
    return Cameras(**loaded)


def lidar_from_frame(
    frame: Mapping[str, Any], sensor_blobs_path: Path, config: SensorConfig, history_index: int | None
) -> Lidar:
    """The merged point cloud when requested at `history_index`, else an empty `Lidar()`."""
    if history_index is None or not config.wants("lidar_pc", history_index):
        return Lidar()
    path = _sensor_file(sensor_blobs_path, frame["lidar_path"], "lidar_pc", frame["token"])
    return Lidar(lidar_pc=read_pcd(path), lidar_path=path)


def frame_from_dict(
    frame: Mapping[str, Any],
    sensor_blobs_path: Path,
    config: SensorConfig = SensorConfig.build_no_sensors(),
    history_index: int | None = None,
) -> Frame:
    """One OpenScene frame dict → `Frame` (global ego status); sensors only for history frames that want them."""
    return Frame(
        token=str(frame["token"]),
        timestamp=int(frame["timestamp"]),
        roadblock_ids=[str(r) for r in frame["roadblock_ids"]],
        traffic_lights=[(int(lane_connector), bool(red)) for lane_connector, red in frame["traffic_lights"]],
        annotations=annotations_from_frame(frame),
        ego_status=ego_status_from_frame(frame),
        lidar=lidar_from_frame(frame, sensor_blobs_path, config, history_index),
        cameras=cameras_from_frame(frame, sensor_blobs_path, config, history_index),
    )


def validate_log(frames: Any, path: Path) -> list[dict]:
    """The log's frame list, or LogFormatError naming the file, the frame index and the missing key."""
    if not isinstance(frames, list):
        raise LogFormatError(f"{path}: expected a list of frame dicts, got {type(frames).__name__}")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise LogFormatError(f"{path}: frame {index} is a {type(frame).__name__}, not a dict")
        missing = [key for key in REQUIRED_FRAME_KEYS if key not in frame]
        if missing:
            raise LogFormatError(f"{path}: frame {index} lacks key(s) {missing}")
        if "anns" in frame and (missing := [k for k in ANNOTATION_KEYS if k not in frame["anns"]]):
            raise LogFormatError(f"{path}: frame {index} 'anns' lacks key(s) {missing}")
    return frames


# ------------------------------------------------------------------------------------------------- loader
class SceneLoader:
    """The scenes of the log pickles in `data_path` that pass `scene_filter` (navsim's `SceneLoader`).

    :param data_path: folder of `<log_name>.pkl` files (`navsim_logs/<split>`).
    :param original_sensor_path: `sensor_blobs/<split>`; sensor paths in the logs are relative to it.
    :param scene_filter: window length, stride, route and token filters.
    :param sensor_config: which sensors of which history frames to read from disk.
    :param maps_root: map root for `Scene.map_api` (default `$NUPLAN_MAPS_ROOT`); maps load on first use.
    :param skip_bad_logs: warn about and skip unreadable logs instead of raising.
    """

    def __init__(
        self,
        data_path: str | Path,
        original_sensor_path: str | Path,
        scene_filter: SceneFilter,
        sensor_config: SensorConfig = SensorConfig.build_no_sensors(),
        maps_root: str | Path | None = None,
        skip_bad_logs: bool = False,
    ) -> None:
        if scene_filter.include_synthetic_scenes:
            raise ValueError("SceneLoader reads original OpenScene logs only; include_synthetic_scenes is unsupported")
        self.data_path = require_dir(Path(data_path), "navsim logs", "OPENSCENE_DATA_ROOT")
        self.original_sensor_path = Path(original_sensor_path)
        self.scene_filter = scene_filter
        self.sensor_config = sensor_config
        self.maps_root = Path(maps_root) if maps_root is not None else default_maps_root()
        self.skip_bad_logs = skip_bad_logs
        self._windows: dict[str, list[dict]] = {}
        self._log_of: dict[str, str] = {}
        self._filter_scenes()

    def _read_log(self, path: Path) -> list[dict] | None:
        try:
            return validate_log(load_pickle(path), path)
        except (CorruptLogError, UnsafePickleError, LogFormatError) as err:
            if not self.skip_bad_logs:
                raise
            warnings.warn(f"skipping bad log {path}: {err}", stacklevel=3)
            return None

    def _filter_scenes(self) -> None:
        f = self.scene_filter
        num_frames, current = f.num_frames, f.num_history_frames - 1
        wanted_logs = set(f.log_names) if f.log_names is not None else None
        wanted_tokens = set(f.tokens) if f.tokens is not None else None
        paths = sorted(p for p in self.data_path.glob("*.pkl") if wanted_logs is None or p.stem in wanted_logs)
        for path in tqdm(paths, desc="Loading logs", unit="log", leave=False):
            frames = self._read_log(path)
            if frames is None:
                continue
            for start in range(0, len(frames), f.frame_interval):
                window = frames[start : start + num_frames]
                if len(window) < num_frames:
                    break  # windows only get shorter from here
                if f.has_route and len(window[current]["roadblock_ids"]) == 0:
                    continue
                token = str(window[current]["token"])
                if wanted_tokens is not None and token not in wanted_tokens:
                    continue
                self._windows[token] = window
                self._log_of[token] = str(window[current]["log_name"])
                if f.max_scenes is not None and len(self._windows) >= f.max_scenes:
                    return

    # ------------------------------------------------------------------------------------------- queries
    @property
    def tokens(self) -> list[str]:
        """Scene tokens (= token of each scene's current frame), in log and window order."""
        return list(self._windows)

    @property
    def tokens_stage_one(self) -> list[str]:
        """The original-scene tokens; equal to `tokens` since this loader reads no synthetic scenes."""
        return self.tokens

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, token: object) -> bool:
        return token in self._windows

    def _window(self, token: str) -> list[dict]:
        try:
            return self._windows[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not among the {len(self)} scenes of {self.data_path}") from None

    def get_tokens_list_per_log(self) -> dict[str, list[str]]:
        """log name → its scene tokens (navsim uses this to split work across workers)."""
        per_log: dict[str, list[str]] = {}
        for token, log_name in self._log_of.items():
            per_log.setdefault(log_name, []).append(token)
        return per_log

    def spread_tokens(self, max_scenes: int | None) -> list[str]:
        """Up to `max_scenes` tokens taken from every log in turn, each log giving a run of consecutive scenes.

        Why not the first `max_scenes` in log order (navsim's `SceneFilter.max_scenes`, kept as the spec says):
        the scenes of one log are 0.5 s apart and share its scenario, so a prefix covers only the first few logs.
        On the synthetic navtest the first 300 of 1,000 scenes are 6 of 20 logs, and the agents' ranking on them
        differed from the ranking on all 1,000. Logs give two scenes at a time, so every run has a consecutive
        pair for EC to score.
        """
        if max_scenes is None or max_scenes >= len(self):
            return self.tokens
        per_log = list(self.get_tokens_list_per_log().values())
        quota = [0] * len(per_log)
        remaining = max(0, max_scenes)
        while remaining:
            for i, tokens in enumerate(per_log):
                take = min(2, remaining, len(tokens) - quota[i])  # two at a time: every run has an EC pair
                quota[i] += take
                remaining -= take
        return [token for tokens, q in zip(per_log, quota) for token in tokens[:q]]

    def scene_metadata(self, token: str) -> SceneMetadata:
        """The metadata of one scene, without touching sensors or maps."""
        window = self._window(token)
        current = window[self.scene_filter.num_history_frames - 1]
        return SceneMetadata(
            log_name=str(current["log_name"]),
            scene_token=str(current["scene_token"]),
            map_name=str(current["map_location"]),
            initial_token=str(current["token"]),
            num_history_frames=self.scene_filter.num_history_frames,
            num_future_frames=self.scene_filter.num_future_frames,
        )

    def _frames(self, window: Sequence[dict]) -> list[Frame]:
        history = self.scene_filter.num_history_frames
        return [
            frame_from_dict(d, self.original_sensor_path, self.sensor_config, i if i < history else None)
            for i, d in enumerate(window)
        ]

    def get_scene_from_token(self, token: str) -> Scene:
        """History + future frames with the requested sensors, and the map of the scene's location (lazy)."""
        metadata = self.scene_metadata(token)
        map_api = LazyMap(canonical_location(metadata.map_name), self.maps_root)
        return Scene(scene_metadata=metadata, map_api=map_api, frames=self._frames(self._window(token)))

    def get_agent_input_from_token(self, token: str) -> AgentInput:
        """What an agent sees: the history frames only (poses local to the current frame), no map, no future."""
        metadata = self.scene_metadata(token)
        history = self._frames(self._window(token)[: metadata.num_history_frames])
        return Scene(scene_metadata=metadata, map_api=None, frames=history).get_agent_input()


# --------------------------------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class SplitSpec:
    """A NAVSIM split: which OpenScene folder it reads and its scene filter (spec §5)."""

    data_split: str
    num_history_frames: int = 4
    num_future_frames: int = 10
    frame_interval: int | None = None
    has_route: bool = True

    def scene_filter(self, **overrides: Any) -> SceneFilter:
        base = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "data_split"}
        return SceneFilter(**{**base, **overrides})


# navtrain/navtest are, in navsim, additionally restricted to published token lists; pass `tokens=` to match.
SPLITS: dict[str, SplitSpec] = {
    "navtrain": SplitSpec("trainval", frame_interval=1),
    "navtest": SplitSpec("test", frame_interval=1),
    "navmini": SplitSpec("mini"),
    "trainval": SplitSpec("trainval"),
    "test": SplitSpec("test"),
    "mini": SplitSpec("mini"),
}


def load_split(
    split: str,
    data_root: str | Path | None = None,
    sensor_config: SensorConfig = SensorConfig.build_no_sensors(),
    maps_root: str | Path | None = None,
    skip_bad_logs: bool = False,
    **filter_overrides: Any,
) -> SceneLoader:
    """A `SceneLoader` over `<data_root>/navsim_logs/<data_split>` with the split's filter (any field overridable).

    `data_root` defaults to `$OPENSCENE_DATA_ROOT`; the sensor folder is required only when sensors are asked for.
    `maps_root` defaults to `$NUPLAN_MAPS_ROOT`, else `<data_root>/maps` (where the synthetic world writes them).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    spec = SPLITS[split]
    root = Path(data_root) if data_root is not None else default_data_root()
    logs = require_dir(root / "navsim_logs" / spec.data_split, f"navsim logs of split {split!r}", "OPENSCENE_DATA_ROOT")
    sensors = root / "sensor_blobs" / spec.data_split
    if not sensor_config.is_empty():
        require_dir(sensors, f"sensor blobs of split {split!r}", "OPENSCENE_DATA_ROOT")
    if maps_root is None and not os.environ.get("NUPLAN_MAPS_ROOT"):
        maps_root = root / "maps"
    return SceneLoader(logs, sensors, spec.scene_filter(**filter_overrides), sensor_config, maps_root, skip_bad_logs)
