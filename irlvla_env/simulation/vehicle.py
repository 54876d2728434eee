"""The ego vehicle: nuPlan's Chrysler Pacifica parameters, the 11-column state layout and footprints (spec §4.2).

Every pose in the simulator and scorer is a *rear-axle* pose; the box is centred `REAR_AXLE_TO_CENTER` ahead of
it along the heading. Corners come in nuPlan's `BBCoordsIndex` order (front-left, rear-left, rear-right,
front-right, then centre), because the scorer's front-edge test and the polygon ring depend on that order.
"""

from __future__ import annotations

import numpy as np
import shapely

# nuPlan `get_pacifica_parameters()` [m].
WHEELBASE = 3.089
WIDTH = 2.297
LENGTH = 5.176
FRONT_LENGTH = 4.049  # rear axle -> front bumper
REAR_LENGTH = 1.127  # rear axle -> rear bumper
HEIGHT = 1.777
REAR_AXLE_TO_CENTER = 1.461
HALF_LENGTH = LENGTH / 2.0
HALF_WIDTH = WIDTH / 2.0

# Columns of the `(..., 11)` state array (rear axle; velocities and accelerations in the body frame).
X, Y, HEADING = 0, 1, 2
VELOCITY_X, VELOCITY_Y = 3, 4
ACCELERATION_X, ACCELERATION_Y = 5, 6
STEERING_ANGLE, STEERING_RATE = 7, 8
ANGULAR_VELOCITY, ANGULAR_ACCELERATION = 9, 10
STATE_SIZE = 11
STATE_NAMES = (
    "x", "y", "heading", "velocity_x", "velocity_y", "acceleration_x", "acceleration_y",
    "steering_angle", "steering_rate", "angular_velocity", "angular_acceleration",
)  # fmt: skip

# Rows of `footprint_coords(...)`.
FRONT_LEFT, REAR_LEFT, REAR_RIGHT, FRONT_RIGHT, CENTER = 0, 1, 2, 3, 4


def centers(poses: np.ndarray) -> np.ndarray:
    """Box centres `(..., 2)` of rear-axle poses `(..., >=3)` (x, y, heading first)."""
    poses = np.asarray(poses, dtype=np.float64)
    heading = poses[..., HEADING]
    return poses[..., :2] + REAR_AXLE_TO_CENTER * np.stack([np.cos(heading), np.sin(heading)], axis=-1)


def center_poses(poses: np.ndarray) -> np.ndarray:
    """Centre poses `(..., 3)` (x, y, heading) of rear-axle poses `(..., >=3)`."""
    poses = np.asarray(poses, dtype=np.float64)
    return np.concatenate([centers(poses), poses[..., HEADING : HEADING + 1]], axis=-1)


def footprint_coords(poses: np.ndarray) -> np.ndarray:
    """Corners and centre `(..., 5, 2)` (FL, RL, RR, FR, centre) of the ego box at rear-axle poses `(..., >=3)`."""
    poses = np.asarray(poses, dtype=np.float64)
    heading = poses[..., HEADING]
    c, s = np.cos(heading), np.sin(heading)
    center = centers(poses)
    forward = np.stack([c, s], axis=-1)
    left = np.stack([-s, c], axis=-1)
    out = np.empty(poses.shape[:-1] + (5, 2), dtype=np.float64)
    out[..., FRONT_LEFT, :] = center + HALF_LENGTH * forward + HALF_WIDTH * left
    out[..., REAR_LEFT, :] = center - HALF_LENGTH * forward + HALF_WIDTH * left
    out[..., REAR_RIGHT, :] = center - HALF_LENGTH * forward - HALF_WIDTH * left
    out[..., FRONT_RIGHT, :] = center + HALF_LENGTH * forward - HALF_WIDTH * left
    out[..., CENTER, :] = center
    return out


def ego_polygons(states: np.ndarray) -> np.ndarray:
    """Shapely box polygons, object array of shape `states.shape[:-1]`, for rear-axle states `(..., >=3)`."""
    coords = footprint_coords(states)[..., :4, :]
    return shapely.polygons(coords)


def ego_polygon(pose: np.ndarray) -> shapely.Polygon:
    """The box polygon of one rear-axle pose `(>=3,)`."""
    return shapely.polygons(footprint_coords(np.asarray(pose, dtype=np.float64)[None, :3])[0, :4])
