"""Closed-loop episodes: the ego executes the start of each plan, and the world is observed again from where it is.

An episode walks along one log. At each 0.5 s step the plan is tracked by the batched LQR + kinematic bicycle
model for `execute_steps` 10 Hz steps; the ego's *executed* pose replaces the logged one, while every other
agent replays its log. The next observation is the log's next frame seen from the executed pose:

- on the synthetic world, cameras and LiDAR are rendered again at that pose from the map and the log's boxes;
- on real data, only what can honestly be moved is moved: the LiDAR sweep is rigidly transformed into the new
  ego frame and the ego-status history is the executed one; camera images stay those of the logged pose.

The episode terminates early when the ego footprint leaves the drivable area or overlaps another agent, and is
truncated at the horizon or at the end of the log.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import numpy as np
import shapely

from irlvla_env.envs.config import EnvConfig
from irlvla_env.envs.scene_pool import ScenePool
from irlvla_env.navsim.dataclasses import AgentInput, EgoStatus, Lidar, Scene
from irlvla_env.navsim.geometry import global_to_local, local_to_global
from irlvla_env.observations import build_observation
from irlvla_env.rewards import RewardOutput, result_subscores
from irlvla_env.scoring.observation import box_corners
from irlvla_env.simulation import vehicle
from irlvla_env.simulation.simulator import local_trajectories_to_states, simulate

# Object classes that end an episode on contact (static clutter only costs reward, through NC).
COLLISION_CLASSES = ("vehicle", "pedestrian", "bicycle")
X, Y, HEADING, VX, VY, AX, AY = range(7)


def ego_state_from_status(status: EgoStatus) -> np.ndarray:
    """The (11,) simulator state of a global `EgoStatus` (steering and angular terms zero, as navsim does)."""
    state = np.zeros(11, dtype=np.float64)
    state[:3] = status.ego_pose
    state[VX:VY + 1] = status.ego_velocity
    state[AX:AY + 1] = status.ego_acceleration
    return state


def move_boxes(boxes: np.ndarray, from_pose: np.ndarray, to_pose: np.ndarray) -> np.ndarray:
    """Re-express ego-frame boxes `(N, 7)` of a frame logged at `from_pose` in the frame of `to_pose`."""
    if len(boxes) == 0:
        return boxes.copy()
    moved = boxes.copy()
    glob = local_to_global(boxes[:, [0, 1, 6]], from_pose)
    moved[:, [0, 1, 6]] = global_to_local(glob, to_pose)
    return moved


def move_points(points: np.ndarray, from_pose: np.ndarray, to_pose: np.ndarray) -> np.ndarray:
    """Rigidly move a `(6, N)` ego-frame sweep logged at `from_pose` into the frame of `to_pose`."""
    moved = points.copy()
    xyh = np.zeros((points.shape[1], 3))
    xyh[:, :2] = points[:2].T
    moved[:2] = global_to_local(local_to_global(xyh, from_pose), to_pose)[:, :2].T
    return moved


class ClosedLoopRollout:
    """State of one closed-loop episode (the env owns one and calls `reset` / `advance`).

    :param scene_pool: where the starting scenes and their logs come from.
    :param config: horizon and executed steps per plan.
    """

    def __init__(self, scene_pool: ScenePool, config: EnvConfig) -> None:
        self.scene_pool = scene_pool
        self.config = config
        self._renderers: dict[str, Any] = {}
        self._log_tokens: dict[str, list[str]] | None = None
        self._next: dict[str, str] = {}
        self.current_token: str = ""
        self._scene: Scene | None = None
        self._history: list[EgoStatus] = []  # executed global ego statuses, oldest first
        self._state = np.zeros(11)
        self._step = 0

    # ------------------------------------------------------------------------------------------ episode
    def reset(self, token: str) -> dict[str, np.ndarray]:
        self._index_logs()
        self.current_token = token
        self._scene = self.scene_pool.loader.get_scene_from_token(token)
        cur = self._scene.current_index
        self._history = [frame.ego_status for frame in self._scene.frames[: cur + 1]]
        self._state = ego_state_from_status(self._history[-1])
        self._step = 0
        return self._observe()

    def advance(self, plan: np.ndarray) -> tuple[dict[str, np.ndarray], bool, bool, str | None]:
        """Execute the start of `plan`; returns (observation, terminated, truncated, reason)."""
        reference = local_trajectories_to_states(plan[None].astype(np.float64), 0.5, self._state)
        rollout = simulate(self._state, reference)[0]
        self._state = rollout[self.config.execute_steps].copy()
        self._step += 1
        nxt = self._next.get(self.current_token)
        if nxt is None:
            self._append_history()
            return self._observe(), False, True, "end_of_log"
        self.current_token = nxt
        self._scene = self.scene_pool.loader.get_scene_from_token(nxt)
        self._append_history()
        reason = self._failure()
        obs = self._observe()
        if reason is not None:
            return obs, True, False, reason
        if self._step >= self.config.horizon:
            return obs, False, True, "horizon"
        return obs, False, False, None

    def rule_output(self, plan: np.ndarray) -> RewardOutput:
        """Rule-based EPDMS of `plan` from the *executed* pose: a metric cache of the displaced scene.

        A cache keyed by the log token would score the plan from where the human was, not where the ego is.
        """
        from irlvla_env.scoring.epdms import score_trajectories
        from irlvla_env.scoring.metric_cache import build_metric_cache

        result = score_trajectories(build_metric_cache(self.displaced_scene()), plan[None].astype(np.float32))
        epdms = np.asarray(result.score, dtype=np.float64)
        return RewardOutput(subscores=result_subscores(result), epdms=epdms, reward=epdms.copy())

    # ------------------------------------------------------------------------------------------ internals
    def _index_logs(self) -> None:
        if self._log_tokens is not None:
            return
        # The loader lists each log's windows in temporal order; with frame_interval 1 they are 0.5 s apart.
        self._log_tokens = self.scene_pool.loader.get_tokens_list_per_log()
        for tokens in self._log_tokens.values():
            self._next.update(zip(tokens[:-1], tokens[1:]))

    def _append_history(self) -> None:
        s = self._state
        status = EgoStatus(
            ego_pose=s[:3].copy(),
            ego_velocity=s[VX:VY + 1].astype(np.float32),
            ego_acceleration=s[AX:AY + 1].astype(np.float32),
            driving_command=self._scene.frames[self._scene.current_index].ego_status.driving_command,
            in_global_frame=True,
        )
        keep = self._scene.scene_metadata.num_history_frames
        self._history = (self._history + [status])[-keep:]

    def displaced_scene(self) -> Scene:
        """The current log scene with the executed ego history in place of the logged one."""
        scene = self._scene
        frames = list(scene.frames)
        cur = scene.current_index
        for offset, status in enumerate(self._history[-(cur + 1):]):
            idx = cur + 1 - len(self._history[-(cur + 1):]) + offset
            frames[idx] = replace(frames[idx], ego_status=status)
        return replace(scene, frames=frames)

    def _failure(self) -> str | None:
        """'off_road' or 'collision' for the executed pose against the log's current frame, else None."""
        scene = self._scene
        pose = self._state[:3]
        footprint = vehicle.ego_polygon(pose)
        corners = np.asarray(footprint.exterior.coords)[:4]
        drivable = scene.map_api.drivable_area
        if not bool(np.all(shapely.contains_xy(drivable, corners[:, 0], corners[:, 1]))):
            return "off_road"
        frame = scene.frames[scene.current_index]
        logged_pose = frame.ego_status.ego_pose
        mask = np.isin(np.asarray(frame.annotations.names), COLLISION_CLASSES)
        boxes = frame.annotations.boxes[mask]
        if len(boxes):
            glob = local_to_global(boxes[:, [0, 1, 6]], logged_pose)
            polys = shapely.polygons(box_corners(glob[:, :2], glob[:, 2], boxes[:, 3], boxes[:, 4]))
            if bool(np.any(shapely.intersects(polys, footprint))):
                return "collision"
        return None

    def _observe(self) -> dict[str, np.ndarray]:
        scene = self._scene
        cur = scene.current_index
        pose = self._state[:3]
        statuses = [
            EgoStatus(
                ego_pose=global_to_local(s.ego_pose, pose),
                ego_velocity=s.ego_velocity,
                ego_acceleration=s.ego_acceleration,
                driving_command=s.driving_command,
                in_global_frame=False,
            )
            for s in self._history
        ]
        agent_input = self.scene_pool.loader.get_agent_input_from_token(self.current_token)
        cameras, lidars = list(agent_input.cameras), list(agent_input.lidars)
        frame = scene.frames[cur]
        logged_pose = frame.ego_status.ego_pose
        renderer = self._renderer(scene)
        current_cams, current_lidar = cameras[-1], lidars[-1]
        if renderer is not None:
            boxes = move_boxes(frame.annotations.boxes, logged_pose, pose)
            names = list(frame.annotations.names)
            wanted = [name for name, cam in current_cams.items() if cam.image is not None]
            images = renderer.render_cameras(pose, boxes, names, cameras=[n.upper() for n in wanted])
            current_cams = replace(current_cams, **{n: replace(getattr(current_cams, n), image=images[n.upper()]) for n in wanted})
            if current_lidar.lidar_pc is not None:
                # LiDAR noise seeded by (scene, step): the same actions give the same observations.
                rng = np.random.default_rng([zlib.crc32(self.current_token.encode()), self._step])
                current_lidar = Lidar(renderer.render_lidar(pose, boxes, names, rng=rng), current_lidar.lidar_path)
        elif current_lidar.lidar_pc is not None:
            current_lidar = Lidar(move_points(current_lidar.lidar_pc, logged_pose, pose), current_lidar.lidar_path)
        cameras[-1], lidars[-1] = current_cams, current_lidar
        n = len(statuses)
        return build_observation(AgentInput(statuses, cameras[-n:], lidars[-n:]), self.config.observation)

    def _renderer(self, scene: Scene) -> Any | None:
        """A sensor renderer for the scene's map when the data set is the synthetic world, else None."""
        from irlvla_env.synthetic.generate import read_manifest

        if read_manifest(self.scene_pool.data_root) is None:
            return None
        key = scene.scene_metadata.map_name
        if key not in self._renderers:
            from irlvla_env.synthetic.render import RenderMap, SensorRenderer
            from irlvla_env.synthetic.sensors import CameraSpec

            frame = scene.frames[scene.current_index]
            rig = {}
            for name, cam in frame.cameras.items():
                if cam.intrinsics is None or cam.image is None:
                    continue
                h, w = cam.image.shape[:2]
                rig[name.upper()] = CameraSpec(name.upper(), np.asarray(cam.intrinsics), np.asarray(cam.sensor2lidar_rotation),
                                               np.asarray(cam.sensor2lidar_translation), (w, h))
            self._renderers[key] = SensorRenderer(RenderMap.from_map_api(scene.map_api), rig=rig or None)
        return self._renderers[key]

