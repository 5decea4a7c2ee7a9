"""The atlas's citable version: a digest of what determines its content, never of where it lives.

Every task key already hashes exactly the inputs of a result (weights digest, dataset
fingerprint, the settings that change it, the stage's version; never batch sizes, devices or
paths of the output or cache). The version hashes those inputs once more, with the model
names the pages show and atlasgen's version, so the same atlas built into another folder or
with another cache has the same version, and a change of content gives another one.

One path can reach the task inputs: a factory model's `arch` is its file's resolved path.
Its file's contents stand in for it here, so moving the project keeps the version."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import atlasgen
from atlasgen.digest import content_key, file_digest

if TYPE_CHECKING:
    from atlasgen.plan import ModelPlan, Task


def portable_arch(arch: str) -> str:
    """`arch` without the path of a factory file: its contents' digest and the function."""
    target, _, function = arch.rpartition(":")
    if not target.endswith(".py") or not Path(target).is_file():
        return arch
    return f"sha256:{file_digest(Path(target))}:{function}"


def _content_inputs(task: Task) -> dict:
    inputs = json.loads(task.inputs)
    if "arch" in inputs:
        inputs["arch"] = portable_arch(inputs["arch"])
    return inputs


def atlas_version(plans: Sequence[ModelPlan]) -> str:
    """SHA-256 (hex) of every model's name and the content inputs of all its tasks."""
    models = [{"name": plan.config.name,
               "tasks": sorted((_content_inputs(task) for task in plan.tasks), key=content_key)}
              for plan in plans]
    return content_key({"atlasgen": atlasgen.__version__, "models": models})
