"""What an observation holds and at which sizes: one typed, hashable config.

The defaults follow TransFuser (spec §2.4) at a size a CPU PPO loop can afford: the left, front and right
cameras stitched into one 64x256 strip, and a 2-channel LiDAR BEV histogram of 64x64 cells over +-32 m.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from irlvla_env.navsim.dataclasses import CAMERA_NAMES

# navsim's AgentInput holds 4 frames; sensors are read at the current one, history index 3 (spec §1.5).
NAVSIM_HISTORY_FRAMES = 4
CURRENT_FRAME_INDEX = NAVSIM_HISTORY_FRAMES - 1
# TransFuser's crops of the 1920x1080 nuPlan images, as fractions so they apply at any resolution.
TRANSFUSER_SIDE_CROP = 416 / 1920  # of the width, on each side, for every camera but the front one
TRANSFUSER_TOP_BOTTOM_CROP = 28 / 1080  # of the height, top and bottom, for every camera


@dataclass(frozen=True)
class ObservationConfig:
    """Shapes of the observation dict (see :func:`irlvla_env.observations.observation_space`).

    :param cameras: cameras stitched left to right, navsim field names (`cam_l0`, `cam_f0`, ...).
    :param image_height: height of the stitched strip [px].
    :param image_width: width of the stitched strip [px].
    :param side_crop: fraction of the width cut from each side of every camera except `cam_f0`.
    :param top_bottom_crop: fraction of the height cut from the top and from the bottom of every camera.
    :param lidar_bev_size: BEV cells per side, B.
    :param lidar_bev_range: the BEV covers x and y in `[-range, range]` around the rear axle [m].
    :param lidar_split_height: points at or below this height go to channel 0, above to channel 1 [m].
    :param lidar_max_height: points at or above this height are dropped [m].
    :param lidar_max_per_cell: histogram counts are clipped here, then divided by it (values in [0, 1]).
    :param lidar_history: past LiDAR sweeps (0.5 s apart, newest first) added as `lidar_history`, one above-ground
        histogram each, moved into the current ego frame: what moved between sweeps is how fast the others drive,
        which one sweep cannot show. 0 (default) adds nothing.
    :param num_history: ego-status frames, oldest first, the last one being the current frame.
    :param include_prompt: add a `prompt` text (command and ego state in words) for language models.
    :param prompt_max_length: the longest prompt the observation space admits [characters].
    """

    cameras: tuple[str, ...] = ("cam_l0", "cam_f0", "cam_r0")
    image_height: int = 64
    image_width: int = 256
    side_crop: float = TRANSFUSER_SIDE_CROP
    top_bottom_crop: float = TRANSFUSER_TOP_BOTTOM_CROP
    lidar_bev_size: int = 64
    lidar_bev_range: float = 32.0
    lidar_split_height: float = 0.2
    lidar_max_height: float = 100.0
    lidar_max_per_cell: float = 5.0
    lidar_history: int = 0
    num_history: int = 4
    include_prompt: bool = False
    prompt_max_length: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))  # lists from JSON/YAML configs
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"ObservationConfig.cameras has unknown {unknown}; expected some of {list(CAMERA_NAMES)}")
        positive = ("image_height", "image_width", "lidar_bev_size", "lidar_bev_range", "lidar_max_per_cell",
                    "num_history", "prompt_max_length")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"ObservationConfig.{name} must be positive, got {getattr(self, name)}")
        if self.image_width < len(self.cameras):
            raise ValueError(f"ObservationConfig.image_width {self.image_width} < {len(self.cameras)} cameras")
        for name in ("side_crop", "top_bottom_crop"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(f"ObservationConfig.{name} must be in [0, 0.5), got {getattr(self, name)}")
        if not 0 <= self.lidar_history < NAVSIM_HISTORY_FRAMES:
            raise ValueError(f"ObservationConfig.lidar_history must be in [0, {NAVSIM_HISTORY_FRAMES - 1}] (navsim holds "
                             f"{NAVSIM_HISTORY_FRAMES} frames), got {self.lidar_history}")
        if self.num_history > NAVSIM_HISTORY_FRAMES:
            raise ValueError(f"ObservationConfig.num_history {self.num_history} > {NAVSIM_HISTORY_FRAMES} (navsim)")

    @property
    def lidar_bev_resolution(self) -> float:
        """Cell size of the LiDAR BEV [m]."""
        return 2.0 * self.lidar_bev_range / self.lidar_bev_size

    def to_dict(self) -> dict:
        """Plain values; `lidar_history` only when set, so the hashes of caches written before it existed hold."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.lidar_history:
            del values["lidar_history"]
        return values

    def config_hash(self) -> str:
        """12 hex characters that change whenever any field does (names observation cache folders)."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:12]
