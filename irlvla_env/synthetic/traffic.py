"""The traffic world: lane-following IDM vehicles, pedestrians on crosswalks, lights, and static objects.

Every moving vehicle (the ego included) follows a `PathTrack`, the concatenated centerlines of its lane route.
Its acceleration comes from IDM against the closest constraint ahead: an object in its corridor, a red or
yellow light, a crosswalk with a walker on it, a turn or merge that must yield, or a tight curve. Objects are
found geometrically (projected onto the path), so stopped obstacles, merging cars and pedestrians all brake a
driver through the same code. Simulation runs at 10 Hz; the log writer records every 5th step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.actors import Agent, BrakePlan, DriverParams, PathTrack, Walker, token
from irlvla_env.synthetic.signals import GREEN, RED, YELLOW
from irlvla_env.synthetic.tile import STOP_LINE_SETBACK, Tile, follow_lanes

DT = 0.1  # [s] simulation step
COMFORT_DECEL = 2.5  # [m/s^2] a driver stops for a yellow light only if this suffices
LOOKAHEAD = 80.0  # [m]
DECIDE_EVERY = 2  # steps between traffic decisions near the ego
FAR_DECIDE_EVERY = 10  # steps between decisions of cars far from the ego
FAR_RANGE = 200.0  # [m]
STOP_LINE_GAP = 1.0  # [m] IDM standstill gap in front of a virtual stop line


@dataclass
class ObjectTable:
    """Positions and states of everything in the world at one step, for vectorised corridor checks."""

    xy: np.ndarray  # (N, 2)
    heading: np.ndarray
    speed: np.ndarray
    length: np.ndarray
    width: np.ndarray
    is_vehicle: np.ndarray
    owner: list  # Agent | Walker | StaticObject

    def __post_init__(self) -> None:
        self.index = {id(o): i for i, o in enumerate(self.owner)}


class World:
    """All objects of one tile, stepped at 10 Hz."""

    def __init__(self, tile: Tile, rng: np.random.Generator, log_key: str) -> None:
        self.tile = tile
        self.net = tile.network
        self.rng = rng
        self.log_key = log_key
        self.t = 0.0
        self.agents: list[Agent] = []
        self.walkers = [Walker(token(log_key, "ped", i), plan) for i, plan in enumerate(tile.pedestrians)]
        self.statics = list(tile.statics)
        self.static_tokens = [token(log_key, "static", i) for i in range(len(self.statics))]
        self.light_state: dict[int, int] = {}
        self._spawn_count = 0
        self._step_count = 0
        self._update_lights()

    # ------------------------------------------------------------------------------------------ population
    def new_agent(self, lane_route: list[int], s: float, v: float, params: DriverParams, is_ego: bool = False,
                  size: tuple[float, float, float] | None = None) -> Agent:  # fmt: skip
        path = PathTrack(self.net, lane_route)
        if size is None:
            size = (float(self.rng.uniform(4.2, 5.2)), float(self.rng.uniform(1.8, 2.05)), float(self.rng.uniform(1.45, 1.9)))
        front = 4.049 if is_ego else size[0] / 2.0
        key = "ego" if is_ego else f"veh{self._spawn_count}"
        self._spawn_count += 0 if is_ego else 1
        agent = Agent(token(self.log_key, key), path, s, v, size, params, front, is_ego=is_ego)
        agent.crossings = path.crossings(self.net.crosswalks)
        self.agents.append(agent)
        return agent

    def random_params(self) -> DriverParams:
        r = self.rng
        return DriverParams(float(r.uniform(0.8, 1.1)), float(r.uniform(1.0, 1.8)), float(r.uniform(1.5, 3.0)),
                            float(r.uniform(1.0, 2.0)), float(r.uniform(1.8, 2.6)))  # fmt: skip

    def random_route(self, entry_lane: int) -> list[int]:
        return follow_lanes(self.net, entry_lane, 5000.0, prefer=lambda succ: int(self.rng.choice(succ)))

    def populate(self, ego: Agent) -> None:
        """Fill the tile's lanes with traffic at the tile's density, clear of the ego and of each other."""
        spacing = 40.0 / max(self.tile.traffic_density, 1e-3)
        ego_xy = ego.pose()[:2]
        for entry in self.tile.traffic_entries:
            route = self.random_route(entry)
            path = PathTrack(self.net, route)
            s = float(self.rng.uniform(0.0, spacing))
            while s < path.length - 30.0:
                xy = path.pose(s)[:2]
                lane = path.lane_at(s)
                if lane not in self.tile.no_spawn_lanes and self._is_free(xy, 9.0) and np.linalg.norm(xy - ego_xy) > 14.0:
                    params = self.random_params()
                    limit = self.net.lanes[lane].speed_limit
                    self.new_agent(route, s, limit * params.speed_factor * float(self.rng.uniform(0.5, 0.9)), params)
                s += spacing * float(self.rng.uniform(0.5, 1.6))

    def _is_free(self, xy: np.ndarray, radius: float) -> bool:
        pts = [a.pose()[:2] for a in self.agents if a.alive] + [np.array(o.pose[:2]) for o in self.statics]
        return not pts or float(np.min(np.linalg.norm(np.array(pts) - xy, axis=1))) > radius

    def add_lead_brake(self, ego: Agent) -> None:
        """A car ahead of the ego that will brake hard, stay slow for a while, and drive on."""
        gap = float(self.rng.uniform(18.0, 35.0))
        params = self.random_params()
        v = ego.v * float(self.rng.uniform(0.9, 1.05))
        lead = self.new_agent(ego.path.lane_route, ego.s + ego.front + gap, v, params)
        lead.brake_plan = BrakePlan(float(self.rng.uniform(4.0, 14.0)), float(self.rng.uniform(2.5, 3.5)),
                                    float(self.rng.uniform(0.0, 4.0)), float(self.rng.uniform(1.5, 5.0)))  # fmt: skip

    def inflow(self) -> None:
        """New cars enter at the tile's entries when there is room (keeps traffic going through long logs)."""
        rate = 0.04 * self.tile.traffic_density  # [1/s] per entry lane
        for entry in self.tile.traffic_entries:
            if entry in self.tile.no_spawn_lanes or self.rng.random() > rate * DT:
                continue
            start = self.net.lanes[entry].centerline[0]
            if self._is_free(start, 15.0):
                params = self.random_params()
                self.new_agent(self.random_route(entry), 0.0, self.net.lanes[entry].speed_limit * 0.8, params)

    # ------------------------------------------------------------------------------------------- stepping
    def _update_lights(self) -> None:
        self.light_state = {}
        for plan in self.tile.signals:
            self.light_state.update(plan.states(self.t))

    def objects(self) -> ObjectTable:
        owners: list = [a for a in self.agents if a.alive] + [w for w in self.walkers if w.alive] + self.statics
        poses, speed, length, width, is_vehicle = [], [], [], [], []
        for o in owners:
            if isinstance(o, Agent):
                pose = o.pose()
                if o.is_ego:  # the ego's reference is its rear axle: shift to the box centre
                    pose = pose + np.array([1.461 * np.cos(pose[2]), 1.461 * np.sin(pose[2]), 0.0])
                poses.append(pose), speed.append(o.v), length.append(o.size[0]), width.append(o.size[1])
                is_vehicle.append(True)
            elif isinstance(o, Walker):
                poses.append(o.pose()), speed.append(o.v), length.append(0.7), width.append(0.7)
                is_vehicle.append(False)
            else:
                poses.append(np.array(o.pose)), speed.append(0.0), length.append(o.size[0]), width.append(o.size[1])
                is_vehicle.append(False)
        poses = np.array(poses).reshape(-1, 3)
        return ObjectTable(poses[:, :2], poses[:, 2], np.array(speed), np.array(length), np.array(width),
                           np.array(is_vehicle, dtype=bool), owners)  # fmt: skip

    def step(self, ego_controller: object | None = None) -> None:
        """Advance every object by `DT`; the ego's acceleration comes from `ego_controller.accel(world, ego)`.

        Traffic re-decides every `DECIDE_EVERY` steps (staggered), and every `FAR_DECIDE_EVERY` steps when
        farther than `FAR_RANGE` from the ego: nobody records those cars closely, and it keeps a log cheap.
        """
        table = self.objects()
        ego_xy = next((table.xy[table.index[id(a)]] for a in self.agents if a.is_ego and a.alive), None)
        accels = []
        for i, agent in enumerate(self.agents):
            if not agent.alive:
                accels.append(0.0)
            elif agent.is_ego and ego_controller is not None:
                accels.append(ego_controller.accel(self, agent, table))
            else:
                far = ego_xy is not None and np.linalg.norm(table.xy[table.index[id(agent)]] - ego_xy) > FAR_RANGE
                every = FAR_DECIDE_EVERY if far else DECIDE_EVERY
                if (self._step_count + i) % every == 0 or agent.brake_plan is not None:
                    agent.a_cmd = self._traffic_accel(agent, table)
                accels.append(agent.a_cmd)
        self._step_count += 1
        for agent, a in zip(self.agents, accels):
            if not agent.alive:
                continue
            agent.a = float(max(a, -agent.v / DT))
            agent.v = max(agent.v + agent.a * DT, 0.0)
            agent.s += agent.v * DT
            if agent.s >= agent.path.length - 1.0 and not agent.is_ego:
                agent.alive = False
        self._step_walkers(table)
        self.t += DT
        self._update_lights()
        self.inflow()

    def _traffic_accel(self, agent: Agent, table: ObjectTable) -> float:
        a = idm_accel(self, agent, table)
        return a if agent.brake_plan is None else agent.brake_plan.limit(self.t, agent.v, a)

    def _step_walkers(self, table: ObjectTable) -> None:
        vehicle_xy = table.xy[table.is_vehicle]
        vehicle_speed = table.speed[table.is_vehicle]
        for w in self.walkers:
            if not w.alive or self.t < w.plan.start_time:
                w.v = 0.0
                continue
            at_curb = w.plan.crosswalk_id is not None and w.plan.crossing_s[0] - 1.0 <= w.s < w.plan.crossing_s[0]
            go = True
            if at_curb and not w.crossing:
                if w.plan.gate_connectors:  # walk only if the crossing can be finished before those lights turn
                    crossing_time = (w.plan.crossing_s[1] - w.plan.crossing_s[0]) / w.plan.speed + 2.0
                    go = all(self.light_state.get(c, RED) == RED for c in w.plan.gate_connectors) and any(
                        p.stays_red(w.plan.gate_connectors, self.t, crossing_time) for p in self.tile.signals
                    )
                else:  # unsignalised: wait while a car could not comfortably stop before the crosswalk
                    distance = np.linalg.norm(vehicle_xy - w.pose()[:2], axis=1)
                    go = not np.any((distance < 10.0 + 5.0 * vehicle_speed) & (vehicle_speed > 1.0))
                w.crossing = go
            w.v = w.plan.speed if go else 0.0
            w.s += w.v * DT
            if w.s >= w.s_path[-1]:
                w.alive = False


def idm_accel(
    world: World, agent: Agent, table: ObjectTable, path: PathTrack | None = None, s: float | None = None,
    extra_stop: float | None = None,
) -> float:
    """IDM acceleration of `agent` against its closest constraint along `path` (default: its own).

    :param extra_stop: gap [m] from the front bumper to one more virtual stop line the caller wants honoured.
    """
    path = agent.path if path is None else path
    s = agent.s if s is None else s
    p = agent.params
    lane = world.net.lanes[path.lane_at(s)]
    v0 = max(lane.speed_limit * p.speed_factor, 1.0)
    v = agent.v
    gap, v_lead, virtual = _closest_constraint(world, agent, table, path, s)
    if extra_stop is not None and extra_stop < gap:
        gap, v_lead, virtual = extra_stop, 0.0, True
    # Curves: the fastest speed from which the driver can still slow to every curve speed ahead.
    ahead = (path.s >= s) & (path.s <= s + LOOKAHEAD)
    if np.any(ahead):
        k = np.abs(path.kappa[ahead]) + 1e-6
        v_curve = np.minimum(np.sqrt(p.a_lat / k), 0.55 / k)
        v0 = min(v0, float(np.min(np.sqrt(v_curve**2 + 2.0 * 1.2 * np.maximum(path.s[ahead] - s - 3.0, 0.0)))))
    free = 1.0 - (v / v0) ** 4 if v <= v0 else -p.b_comf * (1.0 - (v0 / v) ** 2)
    a = p.a_max * free
    if gap < np.inf:
        # Stop lines are approached closer than cars: the driver aims to stop about a metre before them.
        s_star = (STOP_LINE_GAP if virtual else p.min_gap) + max(
            0.0, v * p.headway + v * (v - v_lead) / (2.0 * np.sqrt(p.a_max * p.b_comf))
        )
        a = min(a, p.a_max * (1.0 - (v / v0) ** 4 - (s_star / max(gap, 0.1)) ** 2))
    return float(np.clip(a, -p.max_decel, p.a_max))


def _closest_constraint(
    world: World, agent: Agent, table: ObjectTable, path: PathTrack, s: float
) -> tuple[float, float, bool]:
    """Distance from the front bumper to the nearest thing to stop behind, its speed, and whether it is a
    virtual stop line (light, yield, crosswalk, end of path) rather than an object."""
    front = s + agent.front
    best_gap, best_v, virtual = path.length - 1.0 - front, 0.0, True  # the end of the path
    # Objects in the corridor ahead.
    me = table.index.get(id(agent), -1)
    xy = table.xy[me] if me >= 0 and path is agent.path and s == agent.s else path.pose(s)[:2]
    near = np.linalg.norm(table.xy - xy, axis=1) < LOOKAHEAD + 10.0
    if me >= 0:
        near[me] = False
    idx = np.flatnonzero(near)
    if len(idx):
        lo = np.searchsorted(path.s, max(s - 5.0, 0.0))
        hi = min(np.searchsorted(path.s, s + LOOKAHEAD), len(path.s) - 1)
        if hi - lo >= 2:
            window = path.points[lo : hi + 1]
            s_obj, lat = g2.project(table.xy[idx], window, path.s[lo : hi + 1])
            h_path = np.interp(s_obj, path.s, path.heading)
            dh = np.abs(np.angle(np.exp(1j * (table.heading[idx] - h_path))))
            half = 0.5 * (agent.size[1] + table.width[idx]) + 0.25
            # Only what is ahead of my own centre leads me; two cars side by side must not both wait.
            centre = s + agent.front - 0.5 * agent.size[0]
            relevant = (np.abs(lat) < half) & (s_obj > centre) & (s_obj < s + LOOKAHEAD - 1)
            relevant &= (dh < 1.0) | (table.speed[idx] < 0.5) | ~table.is_vehicle[idx]
            for j in np.flatnonzero(relevant):
                # Longitudinal extent of a box seen along the path.
                ext = 0.5 * abs(table.length[idx[j]] * np.cos(dh[j])) + 0.5 * abs(table.width[idx[j]] * np.sin(dh[j]))
                gap = s_obj[j] - ext - front
                if gap < best_gap:
                    best_gap, best_v, virtual = gap, float(table.speed[idx[j]] * np.cos(dh[j])), False
    for gap in _stop_points(world, agent, path, s, front):
        if gap < best_gap:
            best_gap, best_v, virtual = gap, 0.0, True
    return best_gap, max(best_v, 0.0), virtual


def _stop_points(world: World, agent: Agent, path: PathTrack, s: float, front: float) -> list[float]:
    """Gaps to virtual stop lines: lights, yielding turns and merges, and occupied crosswalks."""
    net, out = world.net, []
    v = agent.v
    for lane_id, (start, _end) in path.lane_span.items():
        if start < front - 1.0 or start > front + LOOKAHEAD:
            continue
        conn = net.lanes[lane_id]
        if not conn.is_connector:
            continue
        stop = start - (STOP_LINE_SETBACK + 0.6 if conn.has_signal else 0.5)
        gap = stop - front
        if conn.has_signal and gap > -0.5:
            state = world.light_state.get(lane_id, GREEN)
            if state == RED or (state == YELLOW and gap > v * v / (2.0 * COMFORT_DECEL) + 0.5 * v):
                out.append(gap)
                continue
        committed = gap < v * v / (2.0 * COMFORT_DECEL)  # too close to stop gently: go on, as drivers do
        if conn.yield_to and gap > -0.5 and not committed and _must_yield(world, agent, conn.yield_to):
            out.append(gap)
    for cw_id, s_in, _s_out in (agent.crossings if path is agent.path else path.crossings(net.crosswalks)):
        gap = s_in - 1.5 - front
        if -0.5 < gap < LOOKAHEAD and any(w.alive and w.crossing and w.plan.crosswalk_id == cw_id
                                         and w.plan.crossing_s[0] - 1.0 <= w.s <= w.plan.crossing_s[1] + 0.5
                                         for w in world.walkers):  # fmt: skip
            out.append(gap)
    return out


def _must_yield(world: World, me: Agent, priority: list[int]) -> bool:
    """Whether a car with priority is on, or soon to be on, one of the `priority` connectors."""
    net = world.net
    feeders = {net.lanes[c].predecessors[0]: c for c in priority}
    for other in world.agents:
        if other is me or not other.alive:
            continue
        lane_id = other.path.lane_at(other.s + other.front)
        if lane_id in priority:
            return True
        if lane_id in feeders and world.light_state.get(feeders[lane_id], GREEN) != RED and other.v > 1.0:
            span = other.path.lane_span.get(lane_id)
            if span is not None and span[1] - (other.s + other.front) < max(12.0, 4.5 * other.v):
                return True
    return False
