"""The shared dataset pass of one model: every stage that reads the dataset adds one
accumulator per layer it has missing tasks for, one streaming pass feeds them all, and each
stage then stores its tasks."""

from __future__ import annotations

import time
from collections.abc import Mapping

from atlasgen.plan import ModelPlan, Task
from atlasgen.stages import DatasetPass, Run, Stage


def run_dataset_pass(run: Run, plan: ModelPlan, todo: Mapping[Stage, list[Task]]) -> tuple[float, list[str]]:
    """Compute the `todo` tasks of dataset-reading stages; return (images per second, unreadable files)."""
    from atlasgen.data import ImageFolder
    from atlasgen.stream import stream_dataset

    layers = {layer.name: layer for layer in plan.layers}
    accumulators: dict[str, list] = {}
    owners: list[tuple[Stage, Task, object]] = []
    shared: dict = {}
    for stage, tasks in todo.items():
        for task in tasks:
            accumulator = stage.accumulator(task, plan, layers[task.layer], shared)
            accumulators.setdefault(task.layer, []).append(accumulator)
            owners.append((stage, task, accumulator))
    settings = plan.config.stages.examples
    dataset = ImageFolder(plan.dataset, plan.loaded.preprocess, settings.max_images)
    start = time.perf_counter()
    with run.bar(len(dataset), f"{plan.config.name}: dataset pass", "img") as bar:
        _seen, skipped = stream_dataset(plan.loaded.module, accumulators, dataset, settings, run.device, bar.update)
    elapsed = time.perf_counter() - start
    done = DatasetPass(dataset, skipped)
    with run.bar(len(owners), f"{plan.config.name}: dataset results", "layer-task") as bar:
        for stage, task, accumulator in owners:
            run.check_stop()
            bar.set_postfix_str(f"{stage.name} {task.layer}")
            stage.finish(run, plan, task, accumulator, done)
            bar.update(1)
    return (len(dataset) / elapsed if elapsed > 0 else 0.0), skipped
