"""The machine-readable twin of a layer page (`index.json` beside its `index.html`).

It holds what the page shows, as data, with every URL relative to the layer's folder.
Keys are sorted and floats rounded, so identical input gives identical bytes on any
platform (a rebuild then leaves the file untouched).
"""

from __future__ import annotations

import json
from typing import Any

from .formats import stable_float
from .urls import layer_dir, relative_url
from .views import ExampleView, LayerView, UnitView


def _example_json(ex: ExampleView, here: str) -> dict[str, Any]:
    return {
        "source": ex.example.source,
        "box": dict(zip(("left", "top", "right", "bottom"), (int(v) for v in ex.example.box))),
        "value": stable_float(ex.example.value),
        "position": {"row": int(ex.example.position[0]), "col": int(ex.example.position[1])},
        "patch": relative_url(ex.patch.src, here) if ex.patch else None,  # None: not published (ties at zero)
        "heatmap": relative_url(ex.heatmap.src, here) if ex.heatmap else None,
    }


def _unit_json(u: UnitView, here: str) -> dict[str, Any]:
    doc = _unit_fields(u, here)
    if u.stage_images:  # only where a stage adds images, so other layers' files stay as they were
        doc["stage_images"] = {name: relative_url(img.src, here) for name, img in u.stage_images.items()}
    return doc


def _unit_fields(u: UnitView, here: str) -> dict[str, Any]:
    return {
        "channel": u.channel,
        "page": relative_url(u.url, here),
        "images": {name: relative_url(img.src, here) for name, img in u.images.items()},
        "diversity": [relative_url(img.src, here) for img in u.diversity],
        "activation": {name: stable_float(v) for name, v in u.data.activation.items()},
        "dataset_max": stable_float(u.data.dataset_max),
        "dataset_best_mean": stable_float(u.data.dataset_best_mean),
        "dataset_mean": stable_float(u.data.dataset_mean),
        "selectivity": stable_float(u.data.selectivity),
        "dead": bool(u.data.dead),
        "branch": None if u.branch is None else {"name": u.branch.info.name, "unit": u.branch_unit},
        "still": dict(u.data.still),
        "examples": {
            "top": [_example_json(ex, here) for ex in u.top],
            "bottom": [_example_json(ex, here) for ex in u.bottom],
        },
        "similar": [{"channel": r.channel, "score": stable_float(r.score)} for r in u.similar],
        "cross": [{"channel": r.channel, "score": stable_float(r.score)} for r in u.cross],
    }


def layer_json(layer: LayerView) -> str:
    """The layer page as data: byte-identical for identical input (sorted keys, rounded floats)."""
    here = layer_dir(layer.model, layer.name)
    rf = layer.data.receptive_field
    doc = {
        "model": layer.model,
        "layer": layer.name,
        "channels": layer.data.channels,
        "shape": list(layer.data.shape),
        "receptive_field": None
        if rf is None
        else {"size": list(rf.size), "stride": list(rf.stride), "covers_input": bool(rf.covers_input)},
        "box_format": "left, top, right, bottom in source-image pixels (right/bottom exclusive)",
        "branches": [{"name": b.name, "label": b.label, "ops": b.ops, "start": b.start, "stop": b.stop} for b in layer.data.branches],
        "units": [_unit_json(u, here) for u in layer.units],
    }
    if layer.stage_images:
        doc["stage_images"] = {name: relative_url(img.src, here) for name, img in layer.stage_images.items()}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
