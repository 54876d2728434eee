"""Fixed-time traffic-light plans for the synthetic intersections.

A plan cycles through phases; each phase turns a set of lane connectors green, then yellow, then everything
is red for a short clearance. nuPlan logs store only red / not red per connector (spec §1.3), so yellow is
written as not red, as in the real data; drivers still treat it as "stop if you comfortably can".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GREEN, YELLOW, RED = 0, 1, 2


@dataclass(frozen=True)
class SignalPlan:
    """One intersection's light cycle.

    :param connector_ids: every signalised lane connector of the intersection.
    :param phases: per phase, the connectors that are green in it.
    :param green_s: green duration of each phase [s].
    :param yellow_s: yellow duration after each green [s].
    :param all_red_s: clearance after each yellow [s].
    :param offset_s: where in the cycle the world clock starts [s].
    """

    connector_ids: tuple[int, ...]
    phases: tuple[frozenset[int], ...]
    green_s: tuple[float, ...]
    yellow_s: float = 3.0
    all_red_s: float = 1.5
    offset_s: float = 0.0

    @property
    def cycle_s(self) -> float:
        return float(sum(self.green_s) + len(self.phases) * (self.yellow_s + self.all_red_s))

    def states(self, t: float) -> dict[int, int]:
        """`GREEN`, `YELLOW` or `RED` for every connector at world time `t` [s]."""
        state = dict.fromkeys(self.connector_ids, RED)
        tau = float(np.mod(t + self.offset_s, self.cycle_s))
        for phase, green in zip(self.phases, self.green_s):
            if tau < green:
                state.update(dict.fromkeys(phase, GREEN))
                return state
            tau -= green
            if tau < self.yellow_s:
                state.update(dict.fromkeys(phase, YELLOW))
                return state
            tau -= self.yellow_s + self.all_red_s
            if tau < 0:
                return state
        return state

    def with_green_at(self, connector_id: int, t: float) -> "SignalPlan":
        """The same plan, shifted so the phase holding `connector_id` turns green at world time `t` [s]."""
        start = 0.0
        for phase, green in zip(self.phases, self.green_s):
            if connector_id in phase:
                break
            start += green + self.yellow_s + self.all_red_s
        else:
            raise ValueError(f"connector {connector_id} is in no phase of this plan")
        offset = float(np.mod(start - t, self.cycle_s))
        return SignalPlan(self.connector_ids, self.phases, self.green_s, self.yellow_s, self.all_red_s, offset)

    def stays_red(self, connector_ids: tuple[int, ...], t: float, duration: float) -> bool:
        """Whether every one of `connector_ids` is red from `t` for at least `duration` seconds."""
        for tau in np.arange(t, t + duration + 0.5, 0.5):
            state = self.states(float(tau))
            if any(state.get(c, RED) != RED for c in connector_ids):
                return False
        return True
