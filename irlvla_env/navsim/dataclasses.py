"""The NAVSIM v2 data model, with navsim's field names and conventions (spec §1.5, §2.1).

Poses are rear-axle `(x, y, heading)`. `Scene.frames` hold global poses; `AgentInput` holds poses local to the
current frame (index `num_history_frames - 1`). Trajectories are 8 poses at 0.5 s in that local frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from irlvla_env.navsim.geometry import global_to_local

NAVSIM_INTERVAL_LENGTH = 0.5
CAMERA_NAMES = ("cam_f0", "cam_l0", "cam_l1", "cam_l2", "cam_r0", "cam_r1", "cam_r2", "cam_b0")
# OpenScene pickle keys of the cameras, in the order of CAMERA_NAMES.
CAMERA_KEYS = tuple(name.upper() for name in CAMERA_NAMES)
MAP_LOCATIONS = ("us-nv-las-vegas-strip", "us-ma-boston", "us-pa-pittsburgh-hazelwood", "sg-one-north")
DRIVING_COMMANDS = ("left", "straight", "right", "unknown")


@dataclass(frozen=True)
class TrajectorySampling:
    """nuPlan's sampling: any two of `num_poses`, `time_horizon`, `interval_length` define the third."""

    num_poses: int | None = None
    time_horizon: float | None = None
    interval_length: float | None = None

    def __post_init__(self) -> None:
        n, t, dt = self.num_poses, self.time_horizon, self.interval_length
        given = sum(v is not None for v in (n, t, dt))
        if given < 2:
            raise ValueError("TrajectorySampling needs two of num_poses, time_horizon, interval_length")
        if n is None:
            n = int(round(t / dt))
        elif t is None:
            t = n * dt
        elif dt is None:
            dt = t / n
        if n <= 0 or dt <= 0 or abs(n * dt - t) > 1e-6:
            raise ValueError(f"inconsistent TrajectorySampling(num_poses={n}, time_horizon={t}, interval_length={dt})")
        object.__setattr__(self, "num_poses", int(n))
        object.__setattr__(self, "time_horizon", float(t))
        object.__setattr__(self, "interval_length", float(dt))

    @property
    def timestamps(self) -> np.ndarray:
        """Relative times of the poses: `dt, 2 dt, ..., T`."""
        return self.interval_length * np.arange(1, self.num_poses + 1)


DEFAULT_SAMPLING = TrajectorySampling(time_horizon=4.0, interval_length=0.5)


@dataclass
class Trajectory:
    """`poses` float `(num_poses, 3)` local `(x, y, heading)` at `trajectory_sampling`."""

    poses: np.ndarray
    trajectory_sampling: TrajectorySampling = DEFAULT_SAMPLING

    def __post_init__(self) -> None:
        self.poses = np.asarray(self.poses, dtype=np.float32)
        expected = (self.trajectory_sampling.num_poses, 3)
        if self.poses.shape != expected:
            raise ValueError(f"Trajectory.poses must have shape {expected}, got {self.poses.shape}")
        if not np.all(np.isfinite(self.poses)):
            raise ValueError("Trajectory.poses contains NaN or inf")


@dataclass
class Camera:
    """One camera of one frame; every field is None when the sensor config did not ask for it."""

    image: np.ndarray | None = None
    sensor2lidar_rotation: np.ndarray | None = None
    sensor2lidar_translation: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    distortion: np.ndarray | None = None
    camera_path: Path | None = None


@dataclass
class Cameras:
    cam_f0: Camera = field(default_factory=Camera)
    cam_l0: Camera = field(default_factory=Camera)
    cam_l1: Camera = field(default_factory=Camera)
    cam_l2: Camera = field(default_factory=Camera)
    cam_r0: Camera = field(default_factory=Camera)
    cam_r1: Camera = field(default_factory=Camera)
    cam_r2: Camera = field(default_factory=Camera)
    cam_b0: Camera = field(default_factory=Camera)

    def items(self) -> list[tuple[str, Camera]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@dataclass
class Lidar:
    """Merged point cloud, float `(6, N)`: rows `x, y, z, intensity, ring, lidar_id` (ego frame)."""

    lidar_pc: np.ndarray | None = None
    lidar_path: Path | None = None


@dataclass
class EgoStatus:
    ego_pose: np.ndarray
    ego_velocity: np.ndarray
    ego_acceleration: np.ndarray
    driving_command: np.ndarray
    in_global_frame: bool = False

    def __post_init__(self) -> None:
        self.ego_pose = np.asarray(self.ego_pose, dtype=np.float64)
        self.ego_velocity = np.asarray(self.ego_velocity, dtype=np.float32)
        self.ego_acceleration = np.asarray(self.ego_acceleration, dtype=np.float32)
        self.driving_command = np.asarray(self.driving_command, dtype=np.int64)


@dataclass
class AgentInput:
    """What an agent may see: `num_history_frames` ego statuses (local to the current frame), cameras, lidars."""

    ego_statuses: list[EgoStatus]
    cameras: list[Cameras]
    lidars: list[Lidar]


@dataclass
class Annotations:
    """Boxes `(N, 7)` `[x, y, z, length, width, height, heading]` in the ego frame of their frame."""

    boxes: np.ndarray
    names: list[str]
    velocity_3d: np.ndarray
    instance_tokens: list[str]
    track_tokens: list[str]

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 7)
        self.velocity_3d = np.asarray(self.velocity_3d, dtype=np.float64).reshape(-1, 3)
        n = len(self.boxes)
        lengths = {len(self.names), len(self.velocity_3d), len(self.instance_tokens), len(self.track_tokens)}
        if lengths != {n}:
            raise ValueError(f"Annotations fields disagree in length: boxes {n}, others {sorted(lengths)}")


@dataclass
class SceneMetadata:
    log_name: str
    scene_token: str
    map_name: str
    initial_token: str
    num_history_frames: int
    num_future_frames: int
    corresponding_original_scene: str | None = None
    corresponding_original_initial_token: str | None = None


@dataclass
class Frame:
    token: str
    timestamp: int
    roadblock_ids: list[str]
    traffic_lights: list[tuple[int, bool]]
    annotations: Annotations
    ego_status: EgoStatus  # global frame
    lidar: Lidar
    cameras: Cameras


@dataclass
class Scene:
    """History plus future frames around the current frame `num_history_frames - 1`."""

    scene_metadata: SceneMetadata
    map_api: Any
    frames: list[Frame]
    extended_traffic_light_data: list | None = None
    extended_detections_tracks: list | None = None

    @property
    def current_index(self) -> int:
        return self.scene_metadata.num_history_frames - 1

    @property
    def token(self) -> str:
        return self.scene_metadata.initial_token

    def _local_poses(self, indices: range, origin_index: int) -> np.ndarray:
        origin = self.frames[origin_index].ego_status.ego_pose
        global_poses = np.stack([self.frames[i].ego_status.ego_pose for i in indices])
        return global_to_local(global_poses, origin)

    def get_future_trajectory(self, num_trajectory_frames: int | None = None) -> Trajectory:
        n = self.scene_metadata.num_future_frames if num_trajectory_frames is None else num_trajectory_frames
        cur = self.current_index
        if cur + n >= len(self.frames):
            raise ValueError(f"scene {self.token} has only {len(self.frames) - cur - 1} future frames, asked for {n}")
        poses = self._local_poses(range(cur + 1, cur + n + 1), cur)
        return Trajectory(poses, TrajectorySampling(num_poses=n, interval_length=NAVSIM_INTERVAL_LENGTH))

    def get_history_trajectory(self, num_trajectory_frames: int | None = None) -> Trajectory:
        n = self.scene_metadata.num_history_frames if num_trajectory_frames is None else num_trajectory_frames
        poses = self._local_poses(range(0, n), n - 1)
        return Trajectory(poses, TrajectorySampling(num_poses=n, interval_length=NAVSIM_INTERVAL_LENGTH))

    def get_agent_input(self) -> AgentInput:
        cur = self.current_index
        origin = self.frames[cur].ego_status.ego_pose
        statuses, cameras, lidars = [], [], []
        for frame in self.frames[: cur + 1]:
            status = frame.ego_status
            statuses.append(
                EgoStatus(
                    ego_pose=global_to_local(status.ego_pose, origin),
                    ego_velocity=status.ego_velocity,
                    ego_acceleration=status.ego_acceleration,
                    driving_command=status.driving_command,
                    in_global_frame=False,
                )
            )
            cameras.append(frame.cameras)
            lidars.append(frame.lidar)
        return AgentInput(statuses, cameras, lidars)


@dataclass
class SceneFilter:
    """Which windows of which logs become scenes (spec §2.1–§2.2)."""

    num_history_frames: int = 4
    num_future_frames: int = 10
    frame_interval: int | None = None
    has_route: bool = True
    max_scenes: int | None = None
    log_names: list[str] | None = None
    tokens: list[str] | None = None
    include_synthetic_scenes: bool = False
    all_mapping: list | None = None
    synthetic_scene_tokens: list[str] | None = None
    reactive_synthetic_initial_tokens: list[str] | None = None
    non_reactive_synthetic_initial_tokens: list[str] | None = None

    def __post_init__(self) -> None:
        if self.num_history_frames < 1:
            raise ValueError(f"SceneFilter.num_history_frames must be >= 1, got {self.num_history_frames}")
        if self.num_future_frames < 0:
            raise ValueError(f"SceneFilter.num_future_frames must be >= 0, got {self.num_future_frames}")
        if self.frame_interval is None:
            self.frame_interval = self.num_frames
        if self.frame_interval < 1:
            raise ValueError(f"SceneFilter.frame_interval must be >= 1, got {self.frame_interval}")

    @property
    def num_frames(self) -> int:
        return self.num_history_frames + self.num_future_frames


@dataclass
class SensorConfig:
    """Per sensor: `True` (all history frames), `False` (none) or a list of history indices to load."""

    cam_f0: bool | list[int] = False
    cam_l0: bool | list[int] = False
    cam_l1: bool | list[int] = False
    cam_l2: bool | list[int] = False
    cam_r0: bool | list[int] = False
    cam_r1: bool | list[int] = False
    cam_r2: bool | list[int] = False
    cam_b0: bool | list[int] = False
    lidar_pc: bool | list[int] = False

    @classmethod
    def build_all_sensors(cls, include: bool | list[int] = True) -> "SensorConfig":
        return cls(**{f.name: include for f in fields(cls)})

    @classmethod
    def build_no_sensors(cls) -> "SensorConfig":
        return cls()

    def wants(self, sensor: str, history_index: int) -> bool:
        """Whether `sensor` (a field name) is requested at `history_index`."""
        value = getattr(self, sensor)
        if isinstance(value, bool):
            return value
        return history_index in value

    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))
