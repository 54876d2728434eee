"""Intersection tiles: a signalised 4-way crossing or T-junction with crosswalks, stop lines and a car park.

Turns are classified from the arm angles, so the same code serves right- and left-hand traffic: the
"crossing" turn (left in the US, right in Singapore) is protected or permissive, and permissive crossing turns
yield to oncoming traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import Polygon

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.road_network import STOP_TRAFFIC_LIGHT, RoadNetwork, Roadblock
from irlvla_env.synthetic.signals import SignalPlan
from irlvla_env.synthetic.tile import (
    CROSSWALK_WIDTH, STOP_LINE_SETBACK, WALKWAY_WIDTH, PedestrianPlan, StaticObject, Tile, TileFrame, follow_lanes,
)  # fmt: skip


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


def build_intersection(net: RoadNetwork, frame: TileFrame, rng: np.random.Generator, family: str, travel: float) -> Tile:
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


def _corner_car_park(tile: Tile, frame: TileFrame, start: float, rng: np.random.Generator) -> None:
    """A parking lot in the corner between the first two arms, with a row of parked cars."""
    size = np.array([rng.uniform(24.0, 40.0), rng.uniform(14.0, 22.0)])
    lot = np.array([[start, start], [start + size[0], start], [start + size[0], start + size[1]], [start, start + size[1]]])
    tile.network.carparks[tile.network.new_id()] = Polygon(frame(lot))
    heading = frame.yaw + np.pi / 2
    for x in np.arange(start + 2.0, start + size[0] - 2.0, 2.9):
        if rng.random() < 0.7:
            centre = frame(np.array([[x, start + 3.0]]))[0]
            tile.statics.append(StaticObject("vehicle", (centre[0], centre[1], heading), (4.5, 1.9, 1.6)))


def _arm_furniture(net: RoadNetwork, frame: TileFrame, arm: _Arm, half: float, width: float) -> None:
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
    tile: Tile, arms: list[_Arm], movements: dict[tuple[int, int], list[int]], frame: TileFrame, half: float,
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
