"""Human: replay the logged future (spec §2.4), the privileged upper reference of every score table."""

from __future__ import annotations

from agents.abstract_agent import AbstractAgent
from irlvla_env.navsim.dataclasses import DEFAULT_SAMPLING, AgentInput, Scene, SensorConfig, Trajectory, TrajectorySampling


class HumanAgent(AbstractAgent):
    """`scene.get_future_trajectory(num_poses)`; needs the scene, so it can never be submitted."""

    def __init__(self, trajectory_sampling: TrajectorySampling = DEFAULT_SAMPLING):
        super().__init__(trajectory_sampling, requires_scene=True)

    def name(self) -> str:
        return "human"

    def initialize(self) -> None:
        pass

    def get_sensor_config(self) -> SensorConfig:
        return SensorConfig.build_no_sensors()

    def compute_trajectory(self, agent_input: AgentInput, scene: Scene | None = None) -> Trajectory:
        if scene is None:
            raise ValueError("HumanAgent replays the logged future and needs the scene: compute_trajectory(input, scene)")
        future = scene.get_future_trajectory(self._trajectory_sampling.num_poses)
        return Trajectory(future.poses, self._trajectory_sampling)
