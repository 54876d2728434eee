"""EPDMS column names (navsim's CSV names and our short names), weights and multipliers (spec §4.1, §4.12)."""

from __future__ import annotations

# navsim column name of every sub-metric, in navsim's CSV order.
METRIC_COLUMNS: dict[str, str] = {
    "NC": "no_at_fault_collisions",
    "DAC": "drivable_area_compliance",
    "DDC": "driving_direction_compliance",
    "TLC": "traffic_light_compliance",
    "EP": "ego_progress",
    "TTC": "time_to_collision_within_bound",
    "LK": "lane_keeping",
    "HC": "history_comfort",
    "EC": "two_frame_extended_comfort",
}
SHORT_NAMES: dict[str, str] = {column: short for short, column in METRIC_COLUMNS.items()}
SHORT_ORDER: tuple[str, ...] = tuple(METRIC_COLUMNS)

# Terms that multiply the score, and the weighted average (`PDMScorerConfig` weights).
MULTIPLIERS: tuple[str, ...] = ("NC", "DAC", "DDC", "TLC")
WEIGHTS: dict[str, float] = {"EP": 5.0, "TTC": 5.0, "LK": 2.0, "HC": 2.0, "EC": 2.0}

# Columns the human false-positive filter may reset (EC never is, spec §4.8).
HUMAN_FILTERED: tuple[str, ...] = ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC")
