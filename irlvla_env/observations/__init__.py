"""What a policy or reward model sees: Scene/AgentInput -> camera strip, LiDAR BEV, ego status, command.

Public API (docs/interfaces.md): `ObservationConfig`, `build_observation`, `observation_space`,
`required_sensors`, `batch_observations`, `build_prompt`, `ObservationCache`; training targets live in
`irlvla_env.observations.targets` (they need the privileged Scene).
"""

from irlvla_env.observations.builder import (
    MissingSensorError,
    batch_observations,
    build_observation,
    observation_space,
    required_sensors,
)
from irlvla_env.observations.cache import ObservationCache
from irlvla_env.observations.config import ObservationConfig
from irlvla_env.observations.ego import build_prompt

__all__ = [
    "MissingSensorError",
    "ObservationCache",
    "ObservationConfig",
    "batch_observations",
    "build_observation",
    "build_prompt",
    "observation_space",
    "required_sensors",
]
