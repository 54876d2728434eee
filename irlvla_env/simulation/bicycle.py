"""Batched kinematic bicycle model about the rear axle (nuPlan / navsim `BatchKinematicBicycleModel`, spec §4.2).

The commands (acceleration, steering rate) pass through first-order lags before an explicit Euler step. The
order of operations is navsim's on purpose: position and heading advance with the *old* speed, heading and
steering angle, speed with the *filtered* acceleration, and the new yaw rate uses the *new* speed and steering.
"""

from __future__ import annotations

import numpy as np

from irlvla_env.simulation import vehicle as V

MAX_STEERING_ANGLE = np.pi / 3  # [rad]
ACCEL_TIME_CONSTANT = 0.2  # [s]
STEERING_ANGLE_TIME_CONSTANT = 0.05  # [s]


def principal_value(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi) (nuPlan's `principal_value`)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


class BatchKinematicBicycleModel:
    """Propagates `(K, 11)` ego states by one step under `(K,)` acceleration and steering-rate commands.

    :param wheelbase: [m] rear-to-front axle distance (Pacifica 3.089).
    :param max_steering_angle: [rad] bound of the integrated steering angle.
    :param accel_time_constant: [s] lag of the acceleration command.
    :param steering_angle_time_constant: [s] lag of the steering angle.
    """

    def __init__(
        self,
        wheelbase: float = V.WHEELBASE,
        max_steering_angle: float = MAX_STEERING_ANGLE,
        accel_time_constant: float = ACCEL_TIME_CONSTANT,
        steering_angle_time_constant: float = STEERING_ANGLE_TIME_CONSTANT,
    ) -> None:
        self.wheelbase = wheelbase
        self.max_steering_angle = max_steering_angle
        self.accel_time_constant = accel_time_constant
        self.steering_angle_time_constant = steering_angle_time_constant

    def propagate(
        self, states: np.ndarray, accel_cmd: np.ndarray, steering_rate_cmd: np.ndarray, dt: float
    ) -> np.ndarray:
        """The states `(K, 11)` after `dt` seconds.

        :param states: `(K, 11)` rear-axle states (see `vehicle` for the columns).
        :param accel_cmd: `(K,)` [m/s^2] desired longitudinal acceleration.
        :param steering_rate_cmd: `(K,)` [rad/s] desired steering rate.
        :param dt: [s] step length.
        """
        accel = states[:, V.ACCELERATION_X]
        steering = states[:, V.STEERING_ANGLE]
        speed = states[:, V.VELOCITY_X]
        heading = states[:, V.HEADING]

        # First-order lags on the commands.
        ideal_steering = dt * steering_rate_cmd + steering
        new_accel = dt / (dt + self.accel_time_constant) * (accel_cmd - accel) + accel
        lagged_steering = dt / (dt + self.steering_angle_time_constant) * (ideal_steering - steering) + steering
        steering_rate = (lagged_steering - steering) / dt

        out = np.empty_like(states)
        out[:, V.X] = states[:, V.X] + speed * np.cos(heading) * dt
        out[:, V.Y] = states[:, V.Y] + speed * np.sin(heading) * dt
        out[:, V.HEADING] = principal_value(heading + speed * np.tan(steering) / self.wheelbase * dt)
        out[:, V.VELOCITY_X] = speed + new_accel * dt
        out[:, V.VELOCITY_Y] = 0.0
        out[:, V.STEERING_ANGLE] = np.clip(steering + steering_rate * dt, -self.max_steering_angle, self.max_steering_angle)
        out[:, V.ANGULAR_VELOCITY] = out[:, V.VELOCITY_X] * np.tan(out[:, V.STEERING_ANGLE]) / self.wheelbase
        out[:, V.ACCELERATION_X] = new_accel
        out[:, V.ACCELERATION_Y] = 0.0
        out[:, V.ANGULAR_ACCELERATION] = (out[:, V.ANGULAR_VELOCITY] - states[:, V.ANGULAR_VELOCITY]) / dt
        out[:, V.STEERING_RATE] = steering_rate
        return out
