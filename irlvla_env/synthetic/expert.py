"""The "human" ego driver whose logs become the demonstrations.

It drives the same IDM as traffic but like a careful person: a personal speed preference, longer headways,
gentle acceleration with a jerk limit, and decisions a planner must learn from the logs: lane changes around
broken-down cars, out of ending lanes, and (sometimes) past slow leaders, each only when the gap in the target
lane is safe. Its recorded pose carries a small, smooth lateral wander, so demonstrations are not rails.
"""

from __future__ import annotations

import numpy as np

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.actors import Agent, DriverParams, PathTrack
from irlvla_env.synthetic.tile import follow_lanes
from irlvla_env.synthetic.traffic import DT, ObjectTable, World, idm_accel

JERK_LIMIT = 2.5  # [m/s^3] normal jerk bound
URGENT_JERK_LIMIT = 6.0  # [m/s^3] when braking must build up fast
LANE_CHANGE_CHECK_EVERY = 5  # steps (0.5 s)


def expert_params(rng: np.random.Generator) -> DriverParams:
    """A careful driver: slightly under the limit, long headway, soft acceleration, hard limit at 3.5 m/s^2."""
    return DriverParams(
        speed_factor=float(rng.uniform(0.85, 1.02)), headway=float(rng.uniform(1.6, 2.3)),
        min_gap=float(rng.uniform(3.0, 4.5)), a_max=float(rng.uniform(1.0, 1.6)), b_comf=float(rng.uniform(1.5, 2.0)),
        a_lat=float(rng.uniform(1.4, 2.0)), max_decel=3.5,
    )  # fmt: skip


class LateralWander:
    """A smooth lateral offset `d(x)` [m] over distance travelled `x`: a few long sinusoids, ~0.1-0.2 m."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.amp = rng.uniform(0.02, 0.08, size=3)
        self.k = 2.0 * np.pi / rng.uniform(40.0, 160.0, size=3)
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=3)

    def offset(self, x: float) -> float:
        return float(np.sum(self.amp * np.sin(self.k * x + self.phase)))

    def slope(self, x: float) -> float:
        return float(np.sum(self.amp * self.k * np.cos(self.k * x + self.phase)))


def _smoothstep(u: np.ndarray) -> np.ndarray:
    """Quintic 0→1 with zero slope and curvature at both ends (a lane change without a kink)."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u**2)


class ExpertDriver:
    """Controls the ego agent of a `World`; `World.step` calls `accel` once per step."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.params = expert_params(rng)
        self.wander = LateralWander(rng)
        self.odometer = 0.0
        self.lane_change_end = -1.0  # path arclength where the running lane change finishes
        self.cooldown_until = 0.0
        self.lane_changes = 0
        self._steps = 0
        self._blend_length = 0.0

    def accel(self, world: World, ego: Agent, table: ObjectTable) -> float:
        if self._steps % LANE_CHANGE_CHECK_EVERY == 0:
            self._consider_lane_change(world, ego, table)
        self._steps += 1
        target = idm_accel(world, ego, table, extra_stop=self._lane_end_gap(world, ego))
        urgent = target < ego.a - 1.5
        limit = (URGENT_JERK_LIMIT if urgent else JERK_LIMIT) * DT
        a = ego.a + float(np.clip(target - ego.a, -limit, JERK_LIMIT * DT))
        a = float(np.clip(a, -self.params.max_decel, self.params.a_max))
        self.odometer += ego.v * DT
        return a

    def _lane_end_gap(self, world: World, ego: Agent) -> float | None:
        """Gap to the end of an ending lane: a driver who found no gap yet waits there rather than squeezing
        through the short merge connector."""
        lane_id = ego.path.lane_at(ego.s + ego.front)
        if ego.s < self.lane_change_end or not world.net.lanes[lane_id].ends:  # mid-change: already leaving
            return None
        return ego.path.lane_span[lane_id][1] - (ego.s + ego.front) - 1.0

    # ---------------------------------------------------------------------------------------- lane changes
    def _consider_lane_change(self, world: World, ego: Agent, table: ObjectTable) -> None:
        if ego.s < self.lane_change_end or world.t < self.cooldown_until:
            return
        net = world.net
        lane_id = ego.path.lane_at(ego.s + ego.front)
        if net.lanes[lane_id].is_connector:
            return
        directions = self._mandatory_directions(world, ego)
        if not directions and self._wants_to_overtake(world, ego, table):
            directions = [d for d in (-1, 1) if net.neighbour(lane_id, d) is not None]
            self.rng.shuffle(directions)
        for direction in directions:
            target = net.neighbour(lane_id, direction)
            if target is None or net.lanes[target].ends:
                continue
            path = self._blended_path(world, ego, target)
            if path is not None and self._gap_is_safe(ego, path, table):
                ego.path, ego.s = path, 0.0
                ego.crossings = path.crossings(net.crosswalks)
                self.lane_change_end = self._blend_length
                self.cooldown_until = world.t + 12.0
                self.lane_changes += 1
                return

    def _mandatory_directions(self, world: World, ego: Agent) -> list[int]:
        """Directions that leave a lane which ends, or one blocked by a stopped obstacle, ahead."""
        net, path = world.net, ego.path
        horizon = ego.s + 160.0
        for lane_id, (start, _end) in path.lane_span.items():
            if start > horizon:
                break
            if net.lanes[lane_id].ends and _end > ego.s:
                return [-1]
        blocked = {o.blocks_lane for o in world.statics if o.blocks_lane is not None}
        for lane_id in blocked & set(path.lane_span):
            start, end = path.lane_span[lane_id]
            obstacle_s = [g2.project(np.array(o.pose[:2]), path.points, path.s)[0][0]
                          for o in world.statics if o.blocks_lane == lane_id]  # fmt: skip
            if any(ego.s < s_o < ego.s + 150.0 for s_o in obstacle_s):
                return [-1, 1]
        return []

    def _wants_to_overtake(self, world: World, ego: Agent, table: ObjectTable) -> bool:
        """Sometimes pass a leader well below the driver's speed, on roads without lights ahead."""
        net, path = world.net, ego.path
        if any(net.lanes[lane].has_signal for lane, (start, _) in path.lane_span.items() if start < ego.s + 150.0):
            return False
        limit = net.lanes[path.lane_at(ego.s)].speed_limit * self.params.speed_factor
        ahead = g2.project(table.xy, path.points, path.s)
        s_obj, lat = ahead
        slow = (np.abs(lat) < 1.8) & (s_obj > ego.s + ego.front) & (s_obj < ego.s + 40.0) & table.is_vehicle
        slow &= table.speed < limit - 3.0
        return bool(np.any(slow)) and self.rng.random() < 0.3

    def _blended_path(self, world: World, ego: Agent, target_lane: int) -> PathTrack | None:
        """Current path blended into the target lane's route over a distance that keeps yaw rate low."""
        net = world.net
        target = PathTrack(net, follow_lanes(net, target_lane, 5000.0))
        here = ego.path.pose(ego.s)[:2]
        s_t, lat = g2.project(here, target.points, target.s)
        if abs(lat[0]) > 5.0:
            return None
        length = float(np.clip(ego.v * 4.5, 18.0, 60.0))
        if s_t[0] + length + 10.0 > target.length or ego.s + length > ego.path.length:
            return None
        u = np.arange(0.0, length, 1.0)
        w = _smoothstep(u / length)[:, None]
        old = g2.interpolate(ego.path.points, ego.path.s, ego.s + u)
        new = g2.interpolate(target.points, target.s, s_t[0] + u)
        rest = target.s > s_t[0] + length
        points = np.concatenate([(1.0 - w) * old + w * new, target.points[rest]])
        old_ids = np.array([ego.path.lane_at(ego.s + x) for x in u])
        new_ids = np.array([target.lane_at(s_t[0] + x) for x in u])
        lane_ids = np.concatenate([np.where(w[:, 0] < 0.5, old_ids, new_ids), target.lane_ids[rest]])
        self._blend_length = length
        route = list(dict.fromkeys(lane_ids.tolist()))
        return PathTrack(net, route, points, lane_ids)

    def _gap_is_safe(self, ego: Agent, path: PathTrack, table: ObjectTable) -> bool:
        """No car within a speed-dependent gap ahead or behind on the new path, no obstacle on the blend."""
        others = np.array([o is not ego for o in table.owner])
        if not np.any(others):
            return True
        xy = table.xy[others]
        near = np.linalg.norm(xy - path.points[0], axis=1) < 120.0
        if not np.any(near):
            return True
        s_obj, lat = g2.project(xy[near], path.points, path.s)
        h_path = np.interp(s_obj, path.s, path.heading)
        heading = table.heading[others][near]
        same_way = np.abs(np.angle(np.exp(1j * (heading - h_path)))) < 1.0
        in_lane = (np.abs(lat) < 2.2) & (same_way | (table.speed[others][near] < 0.5))
        speed = table.speed[others][near]
        ahead_gap = s_obj - ego.front - 2.5
        behind_gap = -s_obj - 1.2 - 2.5
        unsafe_ahead = in_lane & (s_obj >= 0) & (ahead_gap < np.maximum(8.0, ego.v * 1.0 + (ego.v - speed) * 2.0))
        unsafe_behind = in_lane & (s_obj < 0) & (behind_gap < np.maximum(8.0, speed * 1.5 + (speed - ego.v) * 2.5))
        return not bool(np.any(unsafe_ahead | unsafe_behind))

    # ------------------------------------------------------------------------------------------ recording
    def recorded_pose(self, ego: Agent) -> np.ndarray:
        """Rear-axle pose with the driver's lateral wander (offset along the path normal, heading tilted)."""
        x, y, h = ego.path.pose(ego.s)
        d = self.wander.offset(self.odometer)
        return np.array([x - d * np.sin(h), y + d * np.cos(h), h + np.arctan(self.wander.slope(self.odometer))])
