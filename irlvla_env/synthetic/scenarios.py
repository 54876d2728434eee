"""Scenario families by name, and `build_tile`, which lays out one log's tile from its random stream.

A seed fixes the layout exactly: every free parameter is drawn from the log's generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from irlvla_env.synthetic.corridor import build_corridor
from irlvla_env.synthetic.intersection import build_intersection
from irlvla_env.synthetic.road_network import RoadNetwork
from irlvla_env.synthetic.tile import Tile, TileFrame

TileBuilder = Callable[[RoadNetwork, TileFrame, np.random.Generator, str, float], Tile]
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
    frame = TileFrame(origin, float(rng.uniform(-np.pi, np.pi)))
    return FAMILIES[family](net, frame, rng, family, travel)
