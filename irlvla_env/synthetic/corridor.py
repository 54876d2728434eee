"""Corridor tiles: a two-way multi-lane road, straight or curved, and the cast of its family.

Families on corridors: free driving on straight and curved roads, a lead car that brakes, a broken-down car
that needs a lane change, a lane that ends (merge), pedestrians on a mid-block crosswalk, parked cars, and
dense oncoming traffic on a two-lane road.
"""

from __future__ import annotations

import numpy as np
import shapely

from irlvla_env.synthetic import geometry2d as g2
from irlvla_env.synthetic.road_network import STOP_PED_CROSSING, RoadNetwork, Roadblock
from irlvla_env.synthetic.tile import (
    CROSSWALK_WIDTH, PARKING_WIDTH, WALKWAY_WIDTH, PedestrianPlan, StaticObject, Tile, TileFrame, cross_band,
    follow_lanes, strip,
)  # fmt: skip


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


def build_corridor(net: RoadNetwork, frame: TileFrame, rng: np.random.Generator, family: str, travel: float) -> Tile:
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
    parking = family == "parked_cars" or (drop_at is None and rng.random() < 0.25)
    walk_fwd = edge_fwd + side * (PARKING_WIDTH if parking else 0.3)
    if drop_at is None:
        net.walkways[net.new_id()] = strip(ref, walk_fwd, walk_fwd + side * WALKWAY_WIDTH)
    else:  # past the dropped lane the sidewalk widens to the new road edge
        s_drop = cuts[drop_at]
        net.walkways[net.new_id()] = strip(ref[s_ref <= s_drop + 1.0], walk_fwd, walk_fwd + side * WALKWAY_WIDTH)
        new_edge = side * (n_fwd - 1) * width + side * 0.3
        net.walkways[net.new_id()] = strip(ref[s_ref >= s_drop], new_edge, walk_fwd + side * WALKWAY_WIDTH)
    net.walkways[net.new_id()] = strip(ref, edge_bwd - side * 0.3, edge_bwd - side * (0.3 + WALKWAY_WIDTH))
    tile = Tile(family, net, [], ego_start, traffic_density=float(rng.uniform(0.5, 1.3)))
    for s_drive in rng.uniform(20.0, total - 20.0, size=int(rng.integers(1, 4))):
        # Driveways: drivable asphalt from the road edge across the walkway (nuPlan `generic_drivable_areas`).
        net.generic_drivable[net.new_id()] = shapely.intersection(
            cross_band(ref, s_ref, float(s_drive), 5.0, 40.0), strip(ref, edge_fwd, walk_fwd + side * WALKWAY_WIDTH)
        )
    if parking:
        net.carparks[net.new_id()] = strip(ref, edge_fwd, walk_fwd)
        s_park = ego_start - 20.0
        while s_park < total - 10.0:
            s_park += rng.uniform(6.5, 16.0)
            if rng.random() < (0.8 if family == "parked_cars" else 0.4):
                p = g2.interpolate(ref, s_ref, s_park) + g2.left_normals(ref)[int(min(s_park, total - 1))] * (
                    edge_fwd + side * PARKING_WIDTH / 2
                )
                h = float(g2.headings(ref)[int(min(s_park, total - 1))])
                tile.statics.append(StaticObject("vehicle", (p[0], p[1], h), (4.6, 1.9, 1.6)))

    for s_prop in rng.uniform(10.0, total - 10.0, size=int(rng.integers(0, 4))):
        # Street furniture on the far walkway (bins, boxes): nuPlan's `generic_object`.
        i = int(min(s_prop, total - 1))
        p = ref[i] + g2.left_normals(ref)[i] * (edge_bwd - side * (0.3 + WALKWAY_WIDTH / 2))
        tile.statics.append(StaticObject("generic_object", (p[0], p[1], float(g2.headings(ref)[i])), (0.8, 0.8, 1.1)))

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
    net.crosswalks[cw_id] = cross_band(ref, s_ref, s_cw, CROSSWALK_WIDTH, span)
    for s_stop, road_ref, s_road in ((s_cw - 3.5, ref, s_ref), (float(s_ref[-1]) - s_cw - 3.5, ref[::-1], s_ref)):
        band = cross_band(road_ref, s_road, s_stop, 0.5, span)
        side_poly = strip(road_ref, 0.0, net.side * span)
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
