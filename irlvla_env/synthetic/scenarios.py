"""Scenario tiles: one road layout plus the cast of one log (route, traffic, pedestrians, obstacles).

Each log drives inside its own tile; the tiles of one map sit far apart, so logs never see each other.
Families are registered by name (`FAMILIES`), and `build_tile` draws every free parameter from the log's
random stream, so a seed fixes the layout exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import Polygon

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.road_network import STOP_PED_CROSSING, STOP_TRAFFIC_LIGHT, RoadNetwork, Roadblock
from irlvla_env.synthetic.signals import SignalPlan

WALKWAY_WIDTH = 3.0  # [m]
PARKING_WIDTH = 2.6  # [m]
CROSSWALK_WIDTH = 4.0  # [m]
STOP_LINE_SETBACK = 5.0  # [m] from the end of an incoming lane (the intersection edge) to its stop line


@dataclass
class PedestrianPlan:
    """A walker: a path (walkway → crosswalk → walkway), when to start, and which lights gate the crossing."""

    path: np.ndarray
    speed: float
    start_time: float
    crosswalk_id: int | None = None
    crossing_s: tuple[float, float] = (0.0, 0.0)  # arclength interval of the path on the road
    gate_connectors: tuple[int, ...] = ()  # may only step onto the road while all of these are red


@dataclass
class StaticObject:
    """Something that does not move for the whole log (parked car, broken-down car, cone, barrier)."""

    name: str
    pose: tuple[float, float, float]
    size: tuple[float, float, float]  # length, width, height [m]
    blocks_lane: int | None = None  # the lane it obstructs, for the expert's lane-change decision


@dataclass
class Tile:
    """Everything one log needs from the world."""

    family: str
    network: RoadNetwork
    ego_route: list[int]
    ego_start_s: float
    signals: list[SignalPlan] = field(default_factory=list)
    traffic_entries: list[int] = field(default_factory=list)  # lanes traffic may be spawned on
    no_spawn_lanes: set[int] = field(default_factory=set)
    traffic_density: float = 1.0  # vehicles per 40 m of lane
    pedestrians: list[PedestrianPlan] = field(default_factory=list)
    statics: list[StaticObject] = field(default_factory=list)
    lead_brake: bool = False


class _Frame:
    """Local tile coordinates → world coordinates (rotation, then the tile's offset)."""

    def __init__(self, origin: tuple[float, float], yaw: float) -> None:
        self.origin = np.asarray(origin, dtype=float)
        self.yaw = yaw
        c, s = np.cos(yaw), np.sin(yaw)
        self.rot = np.array([[c, -s], [s, c]])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=float) @ self.rot.T + self.origin


def follow_lanes(net: RoadNetwork, start_lane: int, length: float, prefer: Callable[[list[int]], int] | None = None) -> list[int]:
    """A lane route from `start_lane` through successors until it covers `length` metres or the graph ends."""
    route, covered = [start_lane], net.lanes[start_lane].length
    while covered < length:
        succ = net.lanes[route[-1]].successors
        if not succ:
            break
        route.append(succ[0] if prefer is None or len(succ) == 1 else prefer(succ))
        covered += net.lanes[route[-1]].length
    return route


def _strip(ref: np.ndarray, d0: float, d1: float) -> Polygon:
    """The band between lateral offsets `d0` and `d1` (left positive) of a reference line."""
    return Polygon(np.concatenate([g2.offset(ref, d0), g2.offset(ref, d1)[::-1]])).buffer(0)


def _cross_band(ref: np.ndarray, s_ref: np.ndarray, s_mid: float, width: float, half_span: float) -> Polygon:
    """A band across the road at arclength `s_mid` of `ref`, `width` long and `half_span` to each side."""
    p = g2.interpolate(ref, s_ref, s_mid)
    h = float(np.interp(s_mid, s_ref, np.unwrap(g2.headings(ref))))
    t, n = np.array([np.cos(h), np.sin(h)]), np.array([-np.sin(h), np.cos(h)])
    corners = [p - t * width / 2 - n * half_span, p + t * width / 2 - n * half_span,
               p + t * width / 2 + n * half_span, p - t * width / 2 + n * half_span]  # fmt: skip
    return Polygon(corners)


# ------------------------------------------------------------------------------------------------ corridors
def _corridor_reference(rng: np.random.Generator, length: float, curved: bool, tight: bool) -> np.ndarray:
    """Straights and arcs; `tight` arcs (radius 50-130 m) bend enough to be a left/right driving command."""
    pieces, covered, heading, point = [], 0.0, 0.0, np.zeros(2)
    while covered < length:
        if curved and pieces and rng.random() < 0.7:
            radius = rng.uniform(50.0, 130.0) if tight else rng.uniform(150.0, 350.0)
            angle = rng.choice([-1, 1]) * rng.uniform(0.4, 1.2 if tight else 0.6)
            piece = g2.arc(point, heading, radius, angle)
            heading += angle
        else:
            piece = g2.straight(point, heading, rng.uniform(60.0, 160.0))
        pieces.append(piece)
        covered += float(g2.arclength(piece)[-1])
        point = piece[-1]
    return g2.join(*pieces)


def build_corridor(net: RoadNetwork, frame: _Frame, rng: np.random.Generator, family: str, travel: float) -> Tile:
    """A two-way multi-lane road (straight or curved) and the family's cast along it."""
    ego_start = 40.0
    total = ego_start + travel + 160.0
    curved = family == "curved_road" or (family not in ("straight_road",) and rng.random() < 0.35)
    ref_local = _corridor_reference(rng, total, curved, tight=family == "curved_road")
    ref = g2.resample(frame(ref_local), 1.0)
    s_ref = g2.arclength(ref)
    total = float(s_ref[-1])
    width = float(rng.uniform(3.3, 3.8))
    speed = float(rng.choice([11.2, 13.4, 15.6]))
    n_fwd = {"oncoming_traffic": 1, "stopped_obstacle": 2, "lane_drop_merge": int(rng.integers(2, 4))}.get(
        family, int(rng.integers(1, 4))
    )
    n_bwd = 1 if family == "oncoming_traffic" else int(rng.integers(1, 3))
    cuts = list(np.arange(rng.uniform(70, 110), total - 40.0, rng.uniform(70.0, 120.0)))
    counts = [n_fwd] * (len(cuts) + 1)
    drop_at = None
    if family == "lane_drop_merge":
        drop_at = next(i for i, c in enumerate(cuts) if c > ego_start + 120.0)
        counts = [n_fwd] * (drop_at + 1) + [n_fwd - 1] * (len(cuts) - drop_at)
    fwd = net.add_road(ref, counts, cuts, width, speed)
    back_ref = ref[::-1].copy()
    bwd = net.add_road(back_ref, [n_bwd] * (len(cuts) + 1), [total - c for c in cuts[::-1]], width, speed)

    side = net.side
    edge_fwd, edge_bwd = side * n_fwd * width, -side * n_bwd * width
    parking = family == "parked_cars" or rng.random() < 0.25
    walk_fwd = edge_fwd + side * (PARKING_WIDTH if parking else 0.3)
    net.walkways[net.new_id()] = _strip(ref, walk_fwd, walk_fwd + side * WALKWAY_WIDTH)
    net.walkways[net.new_id()] = _strip(ref, edge_bwd - side * 0.3, edge_bwd - side * (0.3 + WALKWAY_WIDTH))
    tile = Tile(family, net, [], ego_start, traffic_density=float(rng.uniform(0.5, 1.3)))
    for s_drive in rng.uniform(20.0, total - 20.0, size=int(rng.integers(1, 4))):
        # Driveways: drivable asphalt from the road edge across the walkway (nuPlan `generic_drivable_areas`).
        net.generic_drivable[net.new_id()] = shapely.intersection(
            _cross_band(ref, s_ref, float(s_drive), 5.0, 40.0), _strip(ref, edge_fwd, walk_fwd + side * WALKWAY_WIDTH)
        )
    if parking:
        net.carparks[net.new_id()] = _strip(ref, edge_fwd, walk_fwd)
        s_park = ego_start - 20.0
        while s_park < total - 10.0:
            s_park += rng.uniform(6.5, 16.0)
            if rng.random() < (0.8 if family == "parked_cars" else 0.4):
                p = g2.interpolate(ref, s_ref, s_park) + g2.left_normals(ref)[int(min(s_park, total - 1))] * (
                    edge_fwd + side * PARKING_WIDTH / 2
                )
                h = float(g2.headings(ref)[int(min(s_park, total - 1))])
                tile.statics.append(StaticObject("vehicle", (p[0], p[1], h), (4.6, 1.9, 1.6)))

    start_k = {"lane_drop_merge": n_fwd - 1}.get(family, int(rng.integers(0, n_fwd)))
    if family == "stopped_obstacle":
        start_k = int(rng.integers(0, 2))
    ego_lane = fwd[0].lane_ids[start_k]
    tile.ego_route = follow_lanes(net, ego_lane, total)
    tile.traffic_entries = [lane for rb in (fwd[0], bwd[0]) for lane in rb.lane_ids]
    if family == "oncoming_traffic":
        tile.traffic_density = 1.6
    if drop_at is not None:
        tile.no_spawn_lanes |= {rb.lane_ids[-1] for rb in fwd[: drop_at + 1]}
    if family == "lead_vehicle_brake":
        tile.lead_brake = True
    if family == "stopped_obstacle":
        _add_stopped_obstacle(tile, fwd, start_k, ego_start + rng.uniform(90.0, 160.0), rng)
    if family == "crosswalk_pedestrians" or rng.random() < 0.2:
        _add_midblock_crosswalk(tile, ref, s_ref, fwd, bwd, ego_start + rng.uniform(70.0, 150.0), rng, width)
    return tile


def _lane_at(net: RoadNetwork, chain: list[Roadblock], k: int, s_target: float) -> tuple[int, float]:
    """The lane `k` of the roadblock in `chain` that covers chain arclength `s_target`, and the offset in it."""
    covered = 0.0
    for rb in chain:
        lane = net.lanes[rb.lane_ids[min(k, len(rb.lane_ids) - 1)]]
        if covered + lane.length >= s_target:
            return lane.id, s_target - covered
        covered += lane.length + 2.0
    return lane.id, lane.length - 1.0


def _add_stopped_obstacle(tile: Tile, fwd: list[Roadblock], k: int, s_obs: float, rng: np.random.Generator) -> None:
    net = tile.network
    lane_id, s_in = _lane_at(net, fwd, k, s_obs)
    lane = net.lanes[lane_id]
    p = g2.interpolate(lane.centerline, lane.s, s_in)
    h = float(np.interp(s_in, lane.s, np.unwrap(g2.headings(lane.centerline))))
    tile.statics.append(StaticObject("vehicle", (p[0], p[1], h), (4.8, 2.0, 1.7), blocks_lane=lane_id))
    for j, back in enumerate((4.5, 7.5)):
        q = g2.interpolate(lane.centerline, lane.s, max(s_in - back, 0.0))
        name = "traffic_cone" if rng.random() < 0.7 else "barrier"
        size = (0.4, 0.4, 0.7) if name == "traffic_cone" else (0.5, 1.8, 1.0)
        tile.statics.append(StaticObject(name, (q[0], q[1], h), size, blocks_lane=lane_id))
    # Nobody queues behind a broken-down car in this lane: traffic there is spawned ahead of it only.
    tile.no_spawn_lanes |= {rb.lane_ids[min(k, len(rb.lane_ids) - 1)] for rb in fwd[:3]}


def _add_midblock_crosswalk(
    tile: Tile, ref: np.ndarray, s_ref: np.ndarray, fwd: list[Roadblock], bwd: list[Roadblock], s_cw: float,
    rng: np.random.Generator, width: float,
) -> None:  # fmt: skip
    net = tile.network
    n_fwd, n_bwd = len(fwd[0].lane_ids), len(bwd[0].lane_ids)
    span = (max(n_fwd, n_bwd) + 1) * width + WALKWAY_WIDTH
    cw_id = net.new_id()
    net.crosswalks[cw_id] = _cross_band(ref, s_ref, s_cw, CROSSWALK_WIDTH, span)
    for s_stop, road_ref, s_road in ((s_cw - 3.5, ref, s_ref), (float(s_ref[-1]) - s_cw - 3.5, ref[::-1], s_ref)):
        band = _cross_band(road_ref, s_road, s_stop, 0.5, span)
        side_poly = _strip(road_ref, 0.0, net.side * span)
        net.stop_lines[net.new_id()] = (shapely.intersection(band, side_poly), STOP_PED_CROSSING)
    h = float(np.interp(s_cw, s_ref, np.unwrap(g2.headings(ref))))
    centre = g2.interpolate(ref, s_ref, s_cw)
    normal = np.array([-np.sin(h), np.cos(h)])
    half = (n_fwd + 1.5) * width if net.side < 0 else (n_bwd + 1.5) * width
    half_other = (n_bwd + 1.5) * width if net.side < 0 else (n_fwd + 1.5) * width
    for i in range(int(rng.integers(2, 6))):
        direction = 1.0 if rng.random() < 0.5 else -1.0
        a = centre - direction * normal * (half if direction > 0 else half_other)
        b = centre + direction * normal * (half_other if direction > 0 else half)
        jitter = np.array([np.cos(h), np.sin(h)]) * rng.uniform(-1.2, 1.2)
        path = g2.resample(np.array([a + jitter, b + jitter]), 0.5)
        tile.pedestrians.append(PedestrianPlan(path, float(rng.uniform(1.0, 1.6)), float(rng.uniform(0.0, 22.0)), cw_id,
                                               (2.0, float(g2.arclength(path)[-1]) - 2.0)))  # fmt: skip


# --------------------------------------------------------------------------------------------- intersections
@dataclass
class _Arm:
    angle: float
    n_in: int
    n_out: int
    length: float
    incoming: list[Roadblock] = field(default_factory=list)
    outgoing: list[Roadblock] = field(default_factory=list)
    crosswalk_id: int = 0
    walk_ends: np.ndarray | None = None  # (2, 2) curb points at both ends of the crosswalk


def build_intersection(net: RoadNetwork, frame: _Frame, rng: np.random.Generator, family: str, travel: float) -> Tile:
    """A signalised 4-way crossing or T-junction with straight arms, crosswalks and a fixed-time plan."""
    t_junction = family == "t_junction"
    protected = family == "intersection_protected" or (t_junction and rng.random() < 0.5)
    width = float(rng.uniform(3.2, 3.7))
    speed = float(rng.choice([11.2, 13.4]))
    angles = [0.0, np.pi, -np.pi / 2] if t_junction else [0.0, np.pi / 2, np.pi, -np.pi / 2]
    if t_junction and net.left_hand:
        angles[2] = np.pi / 2
    approach_dist = float(rng.uniform(50.0, 130.0))
    arms = [_Arm(a, int(rng.integers(1, 3)), int(rng.integers(1, 3)), 150.0) for a in angles]
    ego_arm = int(rng.integers(0, len(arms)))
    arms[ego_arm].length = approach_dist + 60.0
    half = max((max(a.n_in, a.n_out) for a in arms)) * width + 7.0
    exit_len = max(travel - approach_dist + 80.0, 120.0)
    for arm in arms:
        arm.length = max(arm.length, exit_len)
    arms[ego_arm].length = approach_dist + 60.0

    inter_id = net.new_id()
    box = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    net.intersections[inter_id] = Polygon(frame(box))
    for arm in arms:
        u = np.array([np.cos(arm.angle), np.sin(arm.angle)])
        outward = frame(np.array([u * half, u * (half + arm.length)]))
        cuts = list(np.arange(rng.uniform(60.0, 90.0), arm.length - 30.0, rng.uniform(60.0, 100.0)))
        outward = g2.resample(outward, 1.0)
        arm.outgoing = net.add_road(outward, [arm.n_out] * (len(cuts) + 1), cuts, width, speed)
        arm.incoming = net.add_road(outward[::-1].copy(), [arm.n_in] * (len(cuts) + 1),
                                    [arm.length - c for c in cuts[::-1]], width, speed)  # fmt: skip
        _arm_furniture(net, frame, arm, half, width)

    cross_turn = "right" if net.left_hand else "left"
    movements: dict[tuple[int, int], list[int]] = {}
    for i, a in enumerate(arms):
        last_in = a.incoming[-1]
        for j, b in enumerate(arms):
            if i == j:
                continue
            rel = float(np.angle(np.exp(1j * (b.angle - a.angle - np.pi))))
            turn = "straight" if abs(rel) < 0.3 else ("left" if rel > 0 else "right")
            n_in, n_out = len(last_in.lane_ids), len(b.outgoing[0].lane_ids)
            if turn == "straight":
                pairs = [(k, min(k, n_out - 1)) for k in range(n_in)]
            elif turn == cross_turn:
                pairs = [(0, 0)]
            else:
                pairs = [(n_in - 1, n_out - 1)]
            movements[(i, j)] = [
                net.connect(last_in.lane_ids[ka], b.outgoing[0].lane_ids[kb], width, speed * 0.7, inter_id, turn)
                for ka, kb in pairs
            ]
            for conn in movements[(i, j)]:
                net.lanes[conn].has_signal = True
                net.lanes[conn].stop_line_ids = list(net.lanes[net.lanes[conn].predecessors[0]].stop_line_ids)
    tile = Tile(family, net, [], 0.0, traffic_density=float(rng.uniform(0.6, 1.2)))
    _corner_car_park(tile, frame, half + 12.0, rng)
    tile.signals.append(_signal_plan(net, arms, movements, protected, cross_turn, rng))
    _crossing_pedestrians(tile, arms, movements, frame, half, width, rng)

    # Ego: pick a movement from its arm, a lane that has it, and follow it to the end of the exit arm.
    options = [j for j in range(len(arms)) if (ego_arm, j) in movements]
    weights = np.array([2.0 if net.lanes[movements[(ego_arm, j)][0]].turn == cross_turn else 1.0 for j in options])
    exit_arm = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    conn = movements[(ego_arm, exit_arm)][int(rng.integers(0, len(movements[(ego_arm, exit_arm)])))]
    k = arms[ego_arm].incoming[-1].lane_ids.index(net.lanes[conn].predecessors[0])
    start_lane = arms[ego_arm].incoming[0].lane_ids[k]
    route = [start_lane]
    while route[-1] != net.lanes[conn].predecessors[0]:
        route.append(net.lanes[route[-1]].successors[0])
    route += follow_lanes(net, conn, 10_000.0)
    tile.ego_route = route
    tile.ego_start_s = arms[ego_arm].length - approach_dist
    # Time the lights against the ego's arrival: some logs wait at red, others roll through on green.
    arrival = approach_dist / (0.7 * speed)
    tile.signals[0] = tile.signals[0].with_green_at(conn, arrival + float(rng.uniform(-10.0, 8.0)))
    tile.traffic_entries = [lane for arm in arms for lane in arm.incoming[0].lane_ids]
    return tile


def _corner_car_park(tile: Tile, frame: _Frame, start: float, rng: np.random.Generator) -> None:
    """A parking lot in the corner between the first two arms, with a row of parked cars."""
    size = np.array([rng.uniform(24.0, 40.0), rng.uniform(14.0, 22.0)])
    lot = np.array([[start, start], [start + size[0], start], [start + size[0], start + size[1]], [start, start + size[1]]])
    tile.network.carparks[tile.network.new_id()] = Polygon(frame(lot))
    heading = frame.yaw + np.pi / 2
    for x in np.arange(start + 2.0, start + size[0] - 2.0, 2.9):
        if rng.random() < 0.7:
            centre = frame(np.array([[x, start + 3.0]]))[0]
            tile.statics.append(StaticObject("vehicle", (centre[0], centre[1], heading), (4.5, 1.9, 1.6)))


def _arm_furniture(net: RoadNetwork, frame: _Frame, arm: _Arm, half: float, width: float) -> None:
    """Stop lines, a crosswalk across the arm, and walkways along both sides."""
    u = np.array([np.cos(arm.angle), np.sin(arm.angle)])
    n = np.array([-u[1], u[0]])
    d_in = -net.side * arm.n_in * width  # incoming lanes lie on this side of the centre line (outward view)
    d_out = net.side * arm.n_out * width
    lo, hi = min(d_in, d_out), max(d_in, d_out)
    cw = np.array([u * (half + 0.5) + n * (lo - 1.0), u * (half + 0.5 + CROSSWALK_WIDTH) + n * (lo - 1.0),
                   u * (half + 0.5 + CROSSWALK_WIDTH) + n * (hi + 1.0), u * (half + 0.5) + n * (hi + 1.0)])  # fmt: skip
    arm.crosswalk_id = net.new_id()
    net.crosswalks[arm.crosswalk_id] = Polygon(frame(cw))
    for lane_id in arm.incoming[-1].lane_ids:
        lane = net.lanes[lane_id]
        stop = g2.interpolate(lane.centerline, lane.s, lane.length - STOP_LINE_SETBACK)
        h = float(g2.headings(lane.centerline)[-1])
        t, m = np.array([np.cos(h), np.sin(h)]), np.array([-np.sin(h), np.cos(h)])
        corners = [stop - 0.3 * t - m * width / 2, stop + 0.3 * t - m * width / 2,
                   stop + 0.3 * t + m * width / 2, stop - 0.3 * t + m * width / 2]  # fmt: skip
        sid = net.new_id()
        net.stop_lines[sid] = (Polygon(corners), STOP_TRAFFIC_LIGHT)
        lane.stop_line_ids = [sid]
    for lateral in (lo - 0.3 - WALKWAY_WIDTH, hi + 0.3):
        strip = np.array([u * half + n * lateral, u * (half + arm.length) + n * lateral,
                          u * (half + arm.length) + n * (lateral + WALKWAY_WIDTH), u * half + n * (lateral + WALKWAY_WIDTH)])  # fmt: skip
        net.walkways[net.new_id()] = Polygon(frame(strip))
    arm.walk_ends = frame(np.array([u * (half + 2.5) + n * (lo - 1.8), u * (half + 2.5) + n * (hi + 1.8)]))


def _signal_plan(
    net: RoadNetwork, arms: list[_Arm], movements: dict[tuple[int, int], list[int]], protected: bool, cross_turn: str,
    rng: np.random.Generator,
) -> SignalPlan:  # fmt: skip
    """Phases per axis (pairs of opposite arms): through + near turns (+ permissive crossing turns), then
    protected crossing turns when `protected`. Permissive crossing turns yield to the oncoming movements."""
    axes: list[list[int]] = []
    for i, arm in enumerate(arms):
        partner = next((a for a in axes if len(a) == 1 and abs(np.cos(arms[a[0]].angle - arm.angle) + 1) < 1e-6), None)
        if partner is not None:
            partner.append(i)
        else:
            axes.append([i])
    phases: list[frozenset[int]] = []
    for axis in axes:
        through, crossing = set(), set()
        for (i, _j), conns in movements.items():
            if i not in axis:
                continue
            for c in conns:
                (crossing if net.lanes[c].turn == cross_turn else through).add(c)
        if len(axis) == 1:  # a lone arm (T-junction stem) moves in one phase of its own
            phases.append(frozenset(through | crossing))
            continue
        if protected:
            phases += [frozenset(through), frozenset(crossing)]
        else:
            phases.append(frozenset(through | crossing))
            for c in crossing:
                src = next(i for (i, _j), cs in movements.items() if c in cs)
                oncoming = [a for a in axis if a != src][0]
                net.lanes[c].yield_to = [x for (i, _j), cs in movements.items() if i == oncoming for x in cs
                                         if net.lanes[x].turn != cross_turn]  # fmt: skip
    all_conns = tuple(sorted(c for cs in movements.values() for c in cs))
    green = tuple(float(rng.uniform(6.0, 9.0) if len(p) < 3 else rng.uniform(10.0, 16.0)) for p in phases)
    return SignalPlan(all_conns, tuple(phases), green, 3.0, 1.0, 0.0)


def _crossing_pedestrians(
    tile: Tile, arms: list[_Arm], movements: dict[tuple[int, int], list[int]], frame: _Frame, half: float,
    width: float, rng: np.random.Generator,
) -> None:  # fmt: skip
    """Walkers across each arm's crosswalk; they step onto the road only while every movement from that arm
    and every straight movement into it is red (turning cars yield to them)."""
    net = tile.network
    for idx, arm in enumerate(arms):
        gate = [c for (i, j), cs in movements.items() for c in cs
                if i == idx or (j == idx and net.lanes[c].turn == "straight")]  # fmt: skip
        for _ in range(int(rng.integers(0, 4))):
            a, b = arm.walk_ends if rng.random() < 0.5 else arm.walk_ends[::-1]
            lead_in = a + (a - b) / np.linalg.norm(a - b) * rng.uniform(3.0, 12.0)
            path = g2.resample(np.array([lead_in, a, b, b + (b - a) / np.linalg.norm(b - a) * 6.0]), 0.5)
            s_a = float(np.linalg.norm(lead_in - a))
            tile.pedestrians.append(PedestrianPlan(path, float(rng.uniform(1.0, 1.6)), float(rng.uniform(0.0, 25.0)),
                                                   arm.crosswalk_id, (s_a, s_a + float(np.linalg.norm(b - a))),
                                                   tuple(gate)))  # fmt: skip


# ------------------------------------------------------------------------------------------------- registry
TileBuilder = Callable[[RoadNetwork, _Frame, np.random.Generator, str, float], Tile]
FAMILIES: dict[str, TileBuilder] = {
    "straight_road": build_corridor,
    "curved_road": build_corridor,
    "lead_vehicle_brake": build_corridor,
    "stopped_obstacle": build_corridor,
    "lane_drop_merge": build_corridor,
    "crosswalk_pedestrians": build_corridor,
    "parked_cars": build_corridor,
    "oncoming_traffic": build_corridor,
    "intersection_protected": build_intersection,
    "intersection_unprotected": build_intersection,
    "t_junction": build_intersection,
}


def build_tile(
    family: str, first_id: int, origin: tuple[float, float], rng: np.random.Generator, travel: float, left_hand: bool
) -> Tile:
    """The tile of one log: a fresh network with ids above `first_id`, placed at `origin`, randomly rotated.

    :param travel: how far the ego may drive during the log [m]; roads are built long enough for it.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown scenario family {family!r}; known: {sorted(FAMILIES)}")
    net = RoadNetwork(first_id, left_hand=left_hand)
    frame = _Frame(origin, float(rng.uniform(-np.pi, np.pi)))
    return FAMILIES[family](net, frame, rng, family, travel)
