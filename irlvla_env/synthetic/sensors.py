"""The synthetic sensor rig: eight nuPlan-like pinhole cameras and one spinning LiDAR.

Frames (spec §1.5, uncertainty U3/U4):
- ego frame = rear axle on the ground, x forward, y left, z up;
- lidar frame = ego frame (`lidar2ego` is the identity), so `sensor2lidar_*` of a camera is also its pose in the
  ego frame and the merged point cloud is written directly in ego coordinates, as TransFuser assumes;
- camera frame = OpenCV: x right, y down, z forward (along the optical axis).

`sensor2lidar_rotation @ p_cam + sensor2lidar_translation` maps a camera-frame point to the lidar (= ego) frame.
Distortion is zero: nuPlan stores Caltech `k1, k2, p1, p2, k3`, and a pinhole renderer has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# nuPlan cameras are 1920x1080 with fx ~ 1545 px: a horizontal field of view of ~63.7 degrees.
NUPLAN_FOCAL_OVER_WIDTH = 1545.0 / 1920.0
DEFAULT_IMAGE_SIZE = (256, 144)  # (W, H) [px]
CAMERA_HEIGHT = 1.6  # [m] above the ground
CAMERA_PITCH_DEG = 3.0  # [deg] downward tilt of every camera

# Name -> (yaw [deg, CCW from ego +x], mount x [m], mount y [m]) relative to the rear axle.
_CAMERA_LAYOUT: dict[str, tuple[float, float, float]] = {
    "CAM_F0": (0.0, 1.85, 0.0),
    "CAM_L0": (55.0, 1.65, 0.35),
    "CAM_L1": (90.0, 1.20, 0.50),
    "CAM_L2": (145.0, 0.50, 0.45),
    "CAM_R0": (-55.0, 1.65, -0.35),
    "CAM_R1": (-90.0, 1.20, -0.50),
    "CAM_R2": (-145.0, 0.50, -0.45),
    "CAM_B0": (180.0, 0.20, 0.0),
}

# Camera axes (x right, y down, z forward) written in the ego frame for a level camera looking along ego +x.
_CAMERA_AXES_IN_EGO = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-ego rotation `(3, 3)` of a camera turned by `yaw` about ego z and tilted down by `pitch` [rad]."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    yaw_m = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    # Rotation about ego +y by +pitch turns the forward axis (1, 0, 0) to (cos p, 0, -sin p): nose down.
    pitch_m = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    return yaw_m @ pitch_m @ _CAMERA_AXES_IN_EGO


@dataclass(frozen=True, eq=False)
class CameraSpec:
    """One pinhole camera with the fields of an OpenScene `cams[...]` entry.

    :param name: OpenScene key, e.g. `"CAM_F0"`.
    :param intrinsics: `(3, 3)` pinhole matrix [px].
    :param sensor2lidar_rotation: `(3, 3)` camera-to-lidar rotation (OpenCV camera axes).
    :param sensor2lidar_translation: `(3,)` camera centre in the lidar (= ego) frame [m].
    :param distortion: `(5,)` Caltech coefficients, all zero here.
    :param image_size: `(W, H)` [px].
    """

    name: str
    intrinsics: np.ndarray
    sensor2lidar_rotation: np.ndarray
    sensor2lidar_translation: np.ndarray
    image_size: tuple[int, int]
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(5))

    @property
    def width(self) -> int:
        return int(self.image_size[0])

    @property
    def height(self) -> int:
        return int(self.image_size[1])

    def ego_to_camera(self, points: np.ndarray) -> np.ndarray:
        """Ego-frame points `(..., 3)` -> camera-frame points `(..., 3)`."""
        return (np.asarray(points, dtype=np.float64) - self.sensor2lidar_translation) @ self.sensor2lidar_rotation

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points `(..., 3)` with z > 0 -> pixel coordinates `(..., 2)` (u right, v down)."""
        k = self.intrinsics
        z = points_cam[..., 2]
        u = k[0, 0] * points_cam[..., 0] / z + k[0, 2]
        v = k[1, 1] * points_cam[..., 1] / z + k[1, 2]
        return np.stack([u, v], axis=-1)

    def pixel_rays(self) -> np.ndarray:
        """Unnormalised viewing rays `(H, W, 3)` through every pixel centre, in the ego frame."""
        k = self.intrinsics
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        rays_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
        return rays_cam @ self.sensor2lidar_rotation.T

    def as_cam_dict(self, data_path: str) -> dict:
        """The OpenScene log-pickle entry of this camera (spec §1.3 `cams`)."""
        return {
            "data_path": data_path,
            "sensor2lidar_rotation": self.sensor2lidar_rotation.copy(),
            "sensor2lidar_translation": self.sensor2lidar_translation.copy(),
            "cam_intrinsic": self.intrinsics.copy(),
            "distortion": self.distortion.copy(),
        }


def pinhole_intrinsics(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """`(3, 3)` intrinsics with the principal point at the image centre; default focal keeps nuPlan's FOV."""
    f = NUPLAN_FOCAL_OVER_WIDTH * width if focal is None else focal
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def default_rig(
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    height: float = CAMERA_HEIGHT,
    pitch_deg: float = CAMERA_PITCH_DEG,
) -> dict[str, CameraSpec]:
    """The eight nuPlan cameras (`CAM_F0 ... CAM_B0`) at nuPlan-like yaws, all with the same pinhole model."""
    width, h_px = int(image_size[0]), int(image_size[1])
    if width <= 0 or h_px <= 0:
        raise ValueError(f"image_size must be positive (W, H), got {image_size}")
    intrinsics = pinhole_intrinsics(width, h_px)
    rig = {}
    for name, (yaw_deg, x, y) in _CAMERA_LAYOUT.items():
        rig[name] = CameraSpec(
            name=name,
            intrinsics=intrinsics.copy(),
            sensor2lidar_rotation=camera_rotation(np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)),
            sensor2lidar_translation=np.array([x, y, height]),
            image_size=(width, h_px),
        )
    return rig


@dataclass(frozen=True)
class LidarSpec:
    """A spinning multi-beam LiDAR on the roof, written out as one merged sweep.

    :param num_beams: rings, spread evenly over `vertical_fov_deg`.
    :param vertical_fov_deg: `(lowest, highest)` beam elevation [deg].
    :param horizontal_resolution_deg: azimuth step [deg].
    :param max_range: returns beyond this distance are dropped [m].
    :param mount: sensor origin in the ego frame [m]; its z is the mount height.
    :param range_noise_std: Gaussian noise on each return's range [m].
    :param dropout: probability that a return is lost.
    """

    num_beams: int = 32
    vertical_fov_deg: tuple[float, float] = (-30.0, 10.0)
    horizontal_resolution_deg: float = 0.4
    max_range: float = 80.0
    mount: tuple[float, float, float] = (1.3, 0.0, 1.8)
    range_noise_std: float = 0.02
    dropout: float = 0.02

    def __post_init__(self) -> None:
        lo, hi = self.vertical_fov_deg
        if self.num_beams < 1 or not lo < hi or self.horizontal_resolution_deg <= 0 or self.max_range <= 0:
            raise ValueError(f"invalid LidarSpec: {self}")

    @property
    def num_azimuths(self) -> int:
        return int(round(360.0 / self.horizontal_resolution_deg))

    def elevations(self) -> np.ndarray:
        """`(num_beams,)` beam elevations [rad], lowest first (ring 0)."""
        return np.deg2rad(np.linspace(*self.vertical_fov_deg, self.num_beams))

    def azimuths(self) -> np.ndarray:
        """`(num_azimuths,)` azimuths [rad] in [-pi, pi), CCW from ego +x."""
        return -np.pi + 2.0 * np.pi * np.arange(self.num_azimuths) / self.num_azimuths

    def ray_directions(self) -> np.ndarray:
        """Unit ray directions `(num_beams, num_azimuths, 3)` in the ego frame."""
        el, az = np.meshgrid(self.elevations(), self.azimuths(), indexing="ij")
        return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)
