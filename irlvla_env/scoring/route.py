"""The ego route: roadblock correction, starting lane, the PDM centerline and the driving command (spec §1.3, §4.10).

Re-implements the route logic of navsim's PDM planner (`route_utils`, `bfs_roadblock`, `dijkstra`,
`abstract_pdm_planner`) and of OpenScene's driving-command helper on our `NuPlanMap`, keeping their search
orders and tie-breaks, because EP, LK and DDC are measured against this centerline and these lanes.

Two variants of the correction exist upstream and both are kept:
- PDM-Closed (metric cache): off-route start → backward BFS, else forward BFS to one of the first 3 route
  roadblocks; gap filling; loop removal.
- OpenScene driving command (log writer): off-route start → backward BFS only (failure → no route); gap
  filling; no loop removal. Its starting lane is the first route lane containing the rear axle, else the lane
  polygon nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Point
from shapely.ops import substring

from irlvla_env.navsim.map_api import SemanticMapLayer
from irlvla_env.simulation import vehicle

HEADING_ERROR_THRESHOLD = np.pi / 4  # [rad] roadblock candidate test
DISPLACEMENT_ERROR_THRESHOLD = 3.0  # [m]
CANDIDATE_RADIUS = 1.0  # [m] half-width of the square searched for roadblocks under the ego
SEARCH_DEPTH_BACKWARD = 15
SEARCH_DEPTH_FORWARD = 30
CENTERLINE_DEPTH = 30  # roadblocks ahead that the Dijkstra search aims for
LOOP_AREA_THRESHOLD = 1.0  # [m^2] overlap of two route roadblock connectors that marks a loop
COMMAND_DISTANCE = 20.0  # [m] look-ahead of the driving command
COMMAND_LATERAL_THRESHOLD = 2.0  # [m]
LEFT, STRAIGHT, RIGHT, UNKNOWN = 0, 1, 2, 3


def normalize_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles mapped to [-pi, pi] through atan2 (navsim's `normalize_angle`)."""
    return np.arctan2(np.sin(angle), np.cos(angle))


def discrete_path(line: LineString) -> np.ndarray:
    """`(N, 3)` vertices of a baseline with headings towards the next vertex (last repeats; nuPlan's convention)."""
    coords = np.asarray(line.coords, dtype=np.float64)[:, :2]
    if len(coords) < 2:
        raise ValueError(f"a baseline path needs at least 2 vertices, got {len(coords)}")
    diff = np.diff(coords, axis=0)
    headings = np.arctan2(diff[:, 1], diff[:, 0])
    return np.column_stack([coords, np.append(headings, headings[-1])])


class PDMPath:
    """A polyline of poses with arc-length projection and interpolation (navsim's `PDMPath`).

    :param poses: `(M, 3)` (x, y, heading); headings are unwrapped so interpolation never jumps by 2 pi.
    """

    def __init__(self, poses: np.ndarray) -> None:
        poses = np.array(poses, dtype=np.float64)
        if poses.ndim != 2 or poses.shape[1] != 3 or len(poses) < 2:
            raise ValueError(f"PDMPath needs poses of shape (M>=2, 3), got {poses.shape}")
        if not np.all(np.isfinite(poses)):
            raise ValueError("PDMPath poses contain NaN or inf")
        poses[:, 2] = np.unwrap(poses[:, 2])
        self.poses = poses
        self.progress = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1))])
        self.linestring = LineString(poses[:, :2])

    @property
    def length(self) -> float:
        return float(self.progress[-1])

    def project(self, points: np.ndarray) -> np.ndarray:
        """Arc length `(...)` of the nearest point on the path to each point `(..., 2)`."""
        points = np.asarray(points, dtype=np.float64)
        return shapely.line_locate_point(self.linestring, shapely.points(points[..., :2]))

    def interpolate(self, distances: np.ndarray | float) -> np.ndarray:
        """Poses `(..., 3)` at arc lengths `(...)`, clipped to `[1e-5, length]`; headings in [-pi, pi].

        Same bracketing as scipy's `interp1d` (left-sided search), so the duplicated vertex where two lanes meet
        resolves the way navsim's does.
        """
        s = np.clip(np.asarray(distances, dtype=np.float64), 1e-5, self.length)
        hi = np.clip(np.searchsorted(self.progress, s, side="left"), 1, len(self.progress) - 1)
        lo = hi - 1
        span = self.progress[hi] - self.progress[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(span > 0, (s - self.progress[lo]) / span, 0.0)
        out = self.poses[lo] + weight[..., None] * (self.poses[hi] - self.poses[lo])
        out[..., 2] = normalize_angle(out[..., 2])
        return out

    def substring(self, start: float, end: float) -> LineString:
        """The path between two arc lengths: the vertices inside `[start, end]`, else shapely's substring."""
        start = float(np.clip(start, 0.0, self.length))
        end = float(np.clip(end, 0.0, self.length))
        inside = (start <= self.progress) & (self.progress <= end)
        if inside.sum() > 1:
            return LineString(self.poses[inside, :2])
        return substring(self.linestring, start, end)


# ------------------------------------------------------------------------------------------------- graph access
def _lane_successors(map_api: Any, edge: Any) -> list:
    """Lane graph successors: a lane leads to lane connectors, a connector to lanes."""
    table = map_api.lane_connectors if edge.layer == SemanticMapLayer.LANE else map_api.lanes
    return [table[i] for i in edge.outgoing_edges if i in table]


def _roadblock_neighbours(map_api: Any, block: Any, forward: bool) -> list:
    """Roadblock graph neighbours: roadblocks link to roadblock connectors and back."""
    table = map_api.roadblock_connectors if block.layer == SemanticMapLayer.ROADBLOCK else map_api.roadblocks
    ids = block.outgoing_edges if forward else block.incoming_edges
    return [table[i] for i in ids if i in table]


def get_roadblock(map_api: Any, block_id: str) -> Any | None:
    """A roadblock or, failing that, a roadblock connector with this id (None if neither)."""
    return map_api.roadblocks.get(str(block_id)) or map_api.roadblock_connectors.get(str(block_id))


def route_dicts(map_api: Any, roadblock_ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ordered `id → roadblock` and `id → lane/connector` of a route (duplicates and unknown ids dropped)."""
    blocks: dict[str, Any] = {}
    lanes: dict[str, Any] = {}
    for block_id in dict.fromkeys(str(i) for i in roadblock_ids):
        block = get_roadblock(map_api, block_id)
        if block is None:
            continue
        blocks[block.id] = block
        table = map_api.lanes if block.layer == SemanticMapLayer.ROADBLOCK else map_api.lane_connectors
        for lane_id in block.interior_edges:
            if lane_id in table:
                lanes[lane_id] = table[lane_id]
    return blocks, lanes


# ----------------------------------------------------------------------------------------------- correction
def _nearest_block(map_api: Any, xy: np.ndarray, table: dict) -> Any | None:
    """The object of `table` whose polygon is closest to `xy` (nuPlan's `get_distance_to_nearest_map_object`)."""
    if not table:
        return None
    objects = list(table.values())
    distances = shapely.distance(Point(xy), np.array([o.polygon for o in objects], dtype=object))
    return objects[int(np.argmin(distances))]


def roadblock_candidates(map_api: Any, ego_pose: np.ndarray, route_ids: dict | list) -> tuple[Any, list] | None:
    """The roadblock the ego most likely drives in, and the candidate list (navsim's
    `get_current_roadblock_candidates`); None when the map has no roadblocks at all.

    Candidates are the (connector) roadblocks within 1 m; one passes when a lane baseline vertex nearest to the
    rear axle is < 3 m away with heading error < pi/4 (a roadblock is listed once per passing lane, as upstream).
    On-route passes win, then other passes, then the roadblock with the smallest lane displacement.
    """
    xy = np.asarray(ego_pose[:2], dtype=np.float64)
    layers = [SemanticMapLayer.ROADBLOCK, SemanticMapLayer.ROADBLOCK_CONNECTOR]
    found = map_api.get_proximal_map_objects(xy, CANDIDATE_RADIUS, layers)
    blocks = [map_api.roadblocks[i] for i in found[layers[0]]] + [map_api.roadblock_connectors[i] for i in found[layers[1]]]
    if not blocks:
        blocks = [b for b in (_nearest_block(map_api, xy, map_api.roadblocks),
                              _nearest_block(map_api, xy, map_api.roadblock_connectors)) if b is not None]  # fmt: skip
    if not blocks:
        return None
    on_route, on_route_errors, others, other_errors, block_errors = [], [], [], [], []
    for block in blocks:
        table = map_api.lanes if block.layer == SemanticMapLayer.ROADBLOCK else map_api.lane_connectors
        best_displacement = np.inf
        for lane_id in block.interior_edges:
            if lane_id not in table:
                continue
            path = discrete_path(table[lane_id].baseline_path)
            distances = np.linalg.norm(path[:, :2] - xy, axis=1)
            nearest = int(np.argmin(distances))
            heading_error = abs(float(normalize_angle(path[nearest, 2] - ego_pose[2])))
            displacement = float(distances[nearest])
            best_displacement = min(best_displacement, displacement)
            if heading_error < HEADING_ERROR_THRESHOLD and displacement < DISPLACEMENT_ERROR_THRESHOLD:
                if block.id in route_ids:
                    on_route.append(block)
                    on_route_errors.append(displacement)
                else:
                    others.append(block)
                    other_errors.append(displacement)
        block_errors.append(best_displacement)
    if on_route:
        return on_route[int(np.argmin(on_route_errors))], on_route
    if others:
        return others[int(np.argmin(other_errors))], others
    return blocks[int(np.argmin(block_errors))], blocks


def bfs_roadblocks(
    map_api: Any, start_id: str, target_ids: list[str], max_depth: int, forward: bool = True
) -> list[str] | None:
    """Breadth-first search over the roadblock graph (navsim's `BreadthFirstSearchRoadBlock`).

    Level by level without a visited set; a node's parent at a given depth is the last one that reached it; the
    first target met at depth ≤ `max_depth` (start = depth 1) ends the search. Returns the id path in driving
    order (start first when searching forward, target first when searching backward), or None.
    """
    start = get_roadblock(map_api, start_id)
    if start is None:
        return None
    targets = set(target_ids)
    parents: dict[tuple[str, int], Any] = {(start.id, 1): None}
    level, depth = [start], 1
    while level and depth <= max_depth:
        following = []
        for block in level:
            if block.id in targets:
                path, d = [block.id], depth
                while parents[(path[-1], d)] is not None:
                    path.append(parents[(path[-1], d)].id)
                    d -= 1
                return path[::-1] if forward else path
            for neighbour in _roadblock_neighbours(map_api, block, forward):
                following.append(neighbour)
                parents[(neighbour.id, depth + 1)] = block
        level, depth = following, depth + 1
    return None


def remove_route_loops(map_api: Any, route_ids: list[str]) -> list[str]:
    """Cut the route at the first roadblock connector overlapping an earlier one by more than 1 m² (a loop)."""
    seen: list = []
    for index, block_id in enumerate(route_ids):
        block = get_roadblock(map_api, block_id)
        if block is None or block.layer != SemanticMapLayer.ROADBLOCK_CONNECTOR:
            continue
        if seen:
            areas = shapely.area(shapely.intersection(np.array(seen, dtype=object), block.polygon))
            if np.any(areas > LOOP_AREA_THRESHOLD):
                return route_ids[:index]
        seen.append(block.polygon)
    return route_ids


def correct_route(
    map_api: Any, roadblock_ids: list[str], ego_pose: np.ndarray, *, forward_fallback: bool = True,
    remove_loops: bool = True,
) -> list[str] | None:  # fmt: skip
    """The corrected route roadblock ids (spec §4.10), or None when there is no usable route.

    :param forward_fallback: PDM-Closed's forward search when the backward search from an off-route start fails
        (OpenScene's driving command has none and gives up instead).
    :param remove_loops: PDM-Closed's loop cut (OpenScene's driving command does not cut loops).
    """
    blocks, _ = route_dicts(map_api, roadblock_ids)
    if not blocks:
        return None
    found = roadblock_candidates(map_api, np.asarray(ego_pose, dtype=np.float64), blocks)
    if found is None:
        return None
    start, candidates = found
    route = list(blocks)

    if start.id not in blocks:  # fix 1: the ego starts off the route
        path = bfs_roadblocks(map_api, route[0], [c.id for c in candidates], SEARCH_DEPTH_BACKWARD, forward=False)
        if path is not None:
            route[:0] = path[:-1]
        elif not forward_fallback:
            return None
        else:
            path = bfs_roadblocks(map_api, start.id, route[:3], SEARCH_DEPTH_FORWARD, forward=True)
            if path is not None:
                route = path + route[route.index(path[-1]) + 1 :]

    filled: list[str] = []  # fix 2: link consecutive roadblocks that are not neighbours
    for index, block_id in enumerate(route):
        filled.append(block_id)
        if index + 1 == len(route):
            break
        following = get_roadblock(map_api, route[index + 1])
        if following is not None and block_id in following.incoming_edges:
            continue
        path = bfs_roadblocks(map_api, block_id, [route[index + 1]], SEARCH_DEPTH_FORWARD, forward=True)
        if path is not None and len(path) >= 3:
            filled.extend(path[1:-1])
    return remove_route_loops(map_api, filled) if remove_loops else filled


# -------------------------------------------------------------------------------------------------- centerline
def dijkstra_lanes(start: Any, candidate_ids: dict | set, target_roadblock_id: str, map_api: Any) -> tuple[list, bool]:
    """Shortest lane path (cost = baseline length) from `start` to any lane of the target roadblock
    (navsim's `Dijkstra`). If the target is unreachable, the path to the cheapest of the deepest expanded lanes.
    """
    queue, dists, depths = [start], [1.0], [1]
    parents: dict[str, Any] = {start.id: None}
    expanded: dict[str, tuple[Any, float, int]] = {}
    end, found = start, False
    while queue:
        idx = min(range(len(dists)), key=dists.__getitem__)
        edge, dist, depth = queue.pop(idx), dists.pop(idx), depths.pop(idx)
        if edge.roadblock_id == target_roadblock_id:
            end, found = edge, True
            break
        expanded[edge.id] = (edge, dist, depth)
        frontier = [e.id for e in queue]
        for successor in _lane_successors(map_api, edge):
            if successor.id not in candidate_ids:
                continue
            alt = dist + float(successor.baseline_path.length)
            if successor.id not in expanded and successor.id not in frontier:
                parents[successor.id] = edge
                queue.append(successor)
                frontier.append(successor.id)
                dists.append(alt)
                depths.append(depth + 1)
            elif successor.id in frontier:
                j = frontier.index(successor.id)
                if alt < dists[j]:
                    parents[successor.id] = edge
                    dists[j] = alt
                    depths[j] = depth + 1
    if not found:
        deepest = max(d for _, _, d in expanded.values())
        end = min((v for v in expanded.values() if v[2] == deepest), key=lambda v: v[1])[0]
    path = [end]
    while parents[path[-1].id] is not None:
        path.append(parents[path[-1].id])
    return path[::-1], found


def discrete_centerline(map_api: Any, start_lane: Any, route_blocks: dict, route_lanes: dict) -> np.ndarray:
    """`(M, 3)` concatenated baselines of the Dijkstra lane path towards the 30th route roadblock ahead."""
    block_ids = list(route_blocks)
    start_idx = block_ids.index(start_lane.roadblock_id) if start_lane.roadblock_id in block_ids else 0
    window = block_ids[start_idx : start_idx + CENTERLINE_DEPTH]
    lanes, _ = dijkstra_lanes(start_lane, route_lanes, window[-1], map_api)
    return np.concatenate([discrete_path(lane.baseline_path) for lane in lanes], axis=0)


def starting_lane(route_lanes: dict, ego_pose: np.ndarray) -> Any | None:
    """PDM-Closed's starting lane: the on-route lane/connector whose polygon touches the rear axle with the smallest
    heading error (at the nearest baseline vertex); else the first containing the box centre; else the one whose
    polygon is nearest to the ego box."""
    ego_pose = np.asarray(ego_pose, dtype=np.float64)
    rear_axle = Point(ego_pose[:2])
    touching, errors = [], []
    for lane in route_lanes.values():
        if lane.polygon.intersects(rear_axle):
            path = discrete_path(lane.baseline_path)
            nearest = int(np.argmin(np.linalg.norm(path[:, :2] - ego_pose[:2], axis=1)))
            touching.append(lane)
            errors.append(abs(float(normalize_angle(path[nearest, 2] - ego_pose[2]))))
    if touching:
        return touching[int(np.argmin(errors))]
    center = Point(vehicle.centers(ego_pose))
    footprint = vehicle.ego_polygon(ego_pose)
    best, best_distance = None, np.inf
    for lane in route_lanes.values():
        if lane.polygon.contains(center):
            return lane
        distance = lane.polygon.distance(footprint)
        if distance < best_distance:
            best, best_distance = lane, distance
    return best


def command_lane(route_lanes: dict, ego_pose: np.ndarray) -> Any | None:
    """OpenScene's current lane: the first route lane containing the rear axle, else the nearest polygon."""
    point = Point(np.asarray(ego_pose, dtype=np.float64)[:2])
    best, best_distance = None, np.inf
    for lane in route_lanes.values():
        if lane.polygon.contains(point):
            return lane
        distance = lane.polygon.distance(point)
        if distance < best_distance:
            best, best_distance = lane, distance
    return best


@dataclass
class RoutePlan:
    """The corrected route of a scene as PDM-Closed and the scorer use it.

    :ivar roadblock_ids: corrected route roadblock (connector) ids, in driving order.
    :ivar lane_ids: ids of their lanes and lane connectors (`route_lane_ids`, used by DDC).
    :ivar starting_lane_id: the lane the centerline starts on.
    :ivar speed_limit_mps: that lane's speed limit (None when the map has none).
    :ivar centerline: the PDM-Closed centerline (EP and LK are measured against it).
    """

    roadblock_ids: list[str]
    lane_ids: list[str]
    starting_lane_id: str
    speed_limit_mps: float | None
    centerline: PDMPath


def plan_route(map_api: Any, roadblock_ids: list[str], ego_pose: np.ndarray) -> RoutePlan:
    """Correct the scene route and build the centerline from the PDM-Closed starting lane (spec §4.10).

    Raises ValueError naming the problem when the route yields no lanes (navsim would fail on such a scene too).
    """
    ego_pose = np.asarray(ego_pose, dtype=np.float64)
    if ego_pose.shape != (3,) or not np.all(np.isfinite(ego_pose)):
        raise ValueError(f"ego_pose must be a finite (3,) rear-axle pose, got {ego_pose!r}")
    corrected = correct_route(map_api, roadblock_ids, ego_pose)
    if corrected is None:
        raise ValueError(f"route {list(roadblock_ids)!r} has no roadblock on map {map_api!r}")
    blocks, lanes = route_dicts(map_api, corrected)
    lane = starting_lane(lanes, ego_pose)
    if lane is None:
        raise ValueError(f"corrected route {corrected!r} has no lanes")
    centerline = PDMPath(discrete_centerline(map_api, lane, blocks, lanes))
    return RoutePlan(list(blocks), list(lanes), lane.id, lane.speed_limit_mps, centerline)


def driving_command(map_api: Any, roadblock_ids: list[str], ego_pose: np.ndarray) -> int:
    """The driving command (0 left, 1 straight, 2 right, 3 unknown) as OpenScene wrote it into the logs (§1.3).

    The point 20 m further along the route centerline than the ego's projection is expressed in the frame of the
    centerline pose at that projection; lateral offset ≥ 2 m → left, ≤ −2 m → right, else straight. No route, a
    route that cannot be linked to the ego, or a degenerate centerline → unknown.
    """
    ego_pose = np.asarray(ego_pose, dtype=np.float64)
    if ego_pose.shape != (3,) or not np.all(np.isfinite(ego_pose)):
        raise ValueError(f"ego_pose must be a finite (3,) rear-axle pose, got {ego_pose!r}")
    corrected = correct_route(map_api, roadblock_ids, ego_pose, forward_fallback=False, remove_loops=False)
    if corrected is None:
        return UNKNOWN
    blocks, lanes = route_dicts(map_api, corrected)
    lane = command_lane(lanes, ego_pose)
    if lane is None:
        return UNKNOWN
    try:
        centerline = PDMPath(discrete_centerline(map_api, lane, blocks, lanes))
    except ValueError:
        return UNKNOWN
    progress = float(centerline.project(ego_pose[:2]))
    current, target = centerline.interpolate(np.array([progress, progress + COMMAND_DISTANCE]))
    c, s = np.cos(current[2]), np.sin(current[2])
    lateral = -s * (target[0] - current[0]) + c * (target[1] - current[1])
    if lateral >= COMMAND_LATERAL_THRESHOLD:
        return LEFT
    if lateral <= -COMMAND_LATERAL_THRESHOLD:
        return RIGHT
    return STRAIGHT


def one_hot_command(command: int) -> np.ndarray:
    """`(4,)` int one-hot `(left, straight, right, unknown)` of a command index."""
    out = np.zeros(4, dtype=int)
    out[int(command)] = 1
    return out
