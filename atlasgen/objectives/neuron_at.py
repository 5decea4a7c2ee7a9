"""neuron_at: maximize the unit at a chosen position of the channel's map, or the mean of a
whole row of units (as in the spatial maps of the seed article).

Positions are fractions of the map (0 = top or left edge, 1 = bottom or right), because the
optimization sees the map at several sizes (its octaves grow the image) and a fraction names
the same place at each; the unit is the one whose cell holds the fraction. `row = 0.5,
col = 0.5` is the `neuron` objective's centre unit.

    [visualize]
    objectives = ["channel", "neuron_at"]
    [visualize.neuron_at]
    row = 0.25        # a quarter of the way down the map
    col = "all"       # every unit of that row (or a fraction, like row)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import unit_value
from atlasgen.parsers import Parser, Problems, number, setting

ALL = "all"
_FRACTION = number(0.0, 1.0)


def _column(value: Any, path: str, problems: Problems) -> float | str | None:
    if isinstance(value, str) and value != ALL:
        problems.add(path, f"expected a fraction from 0.0 to 1.0 or \"all\", got {value!r}")
        return None
    return ALL if value == ALL else _FRACTION(value, path, problems)


@dataclass(frozen=True)
class NeuronAt:
    row: float = setting(0.5, _FRACTION, "the unit's row, as a fraction of the map's height (0 = top)")
    col: float | str = setting(0.5, Parser(_column, "number or \"all\"", "0.0 to 1.0, or \"all\""),
                               "the unit's column, as a fraction of the map's width (0 = left), or \"all\" for the whole row")


def cell(fraction: float, size: int) -> int:
    """The index of the cell of `size` equal cells that holds `fraction` (1.0 is the last)."""
    return min(int(fraction * size), size - 1)


def unit_or_row(acts, rows, channels, settings):
    where = settings.options_for("neuron_at")
    h, w = acts.shape[-2:]
    row = cell(where.row, h)
    if where.col == ALL:
        return acts[rows, channels, row, :].mean(dim=1)
    return unit_value(acts, rows, channels, row, cell(where.col, w))


register(Objective(
    name="neuron_at",
    label="Neuron objective (chosen position)",
    order=35,
    loss=unit_or_row,
    score=unit_or_row,
    options=NeuronAt,
    follows_view=True,  # the chosen unit stays on its content under the random views
))
