"""Feature visualization: for every channel, the images of each configured objective
(`atlasgen.objectives`), optimized in batches of many channels (`atlasgen.featvis`), with the
score each final image reaches and the layer's response to the channel image ("this image
also excites")."""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np

from atlasgen import images, objectives, threads
from atlasgen.plan import channel_range, make_task
from atlasgen.sitedata import Related
from atlasgen.stages import Stage, register

CHUNK = 32  # channels stored per optimization call, so an interrupted build keeps finished work
GPU_BATCHES_PER_CALL = 4  # on a GPU, a call fills this many of the largest automatic batches
_SET_MEMBER = re.compile(r"(?P<name>.+)-(?P<index>\d+)\.png")


def batch_settings(settings):
    """`settings` with only the objectives this stage optimizes: an own-loop recipe
    (`Objective.own_loop`) has its own stage and keys."""
    return dataclasses.replace(settings, objectives=objectives.batch_names(settings.objectives))


def key_settings(settings) -> dict:
    """The visualization settings that affect results: all but the batch size, with the options
    (given or default) of the selected objectives that have options; none when no selected
    objective has any, so keys made before objectives had options still match."""
    settings = batch_settings(settings)
    data = dataclasses.asdict(settings)
    data.pop("batch_size")
    data.pop("options")
    options = {name: dataclasses.asdict(settings.options_for(name)) for name in settings.objectives
               if objectives.get(name).options is not None}
    if options:
        data["options"] = options
    return data


def images_per_channel(settings) -> int:
    return sum(objectives.get(name).images(settings) for name in settings.objectives)


def channels_per_call(settings, device) -> int:
    """Channels per optimization call. On a GPU, whole batches: 32 channels of 7 images would
    leave most of an automatic batch of 512 empty (measured on an H100: 4,400 image-steps per
    second where full batches of inception4c run 15,000)."""
    from atlasgen.featvis.optimize import MAX_AUTO_BATCH

    if device.type != "cuda":
        return CHUNK
    per_batch = (settings.batch_size or MAX_AUTO_BATCH) // images_per_channel(settings)
    return max(CHUNK, GPU_BATCHES_PER_CALL * per_batch)


class FeatureVisualization(Stage):
    name = "featvis"
    version = 7  # 2: pad and jitter as fractions of the image; neuron objectives follow the view; 3: BatchNorm folded, blur scaled to the field; 4: clamp instead of sigmoid, half the blur, no random views over a pixel-scale unit's last octave; 5: a pixel-scale unit's last octave in RGB pixels, the negative objective's own learning-rate end; 6: on CPU, the image gradient through a strided image convolution by polyphase convolution (same sums, other rounding); redirected ReLU gradients at the start of every octave; 7: the per-step schedule read from tensors (other rounding), on a GPU fixed-size batches and padded diversity groups (an image the same alone as in a batch), the diversity similarity from position products on deep layers (same values, other rounding)
    order = 40
    title = "feature visualization"

    def tasks(self, basis):
        pre = basis.preprocess
        tasks = []
        if not batch_settings(basis.config.stages.visualize).objectives:
            return tasks
        for layer in basis.layers:
            inputs = {**basis.model_inputs(layer.name), "mean": list(pre.mean), "std": list(pre.std),
                      "visualize": key_settings(basis.config.stages.visualize)}
            tasks += [make_task(self.name, self.version, basis.config.name, layer.name, c, {**inputs, "channel": c})
                      for c in channel_range(basis.config, layer)]
        return tasks

    def compute(self, run, plan, tasks):
        from atlasgen.featvis import visualize_channels
        from atlasgen.hooks import input_resized
        from atlasgen.models import smallest_input

        loaded, settings = plan.loaded, batch_settings(plan.config.stages.visualize)
        by_layer: dict[str, list] = {}
        for task in tasks:
            by_layer.setdefault(task.layer, []).append(task)
        total = len(tasks) * images_per_channel(settings) * settings.steps  # image-steps, as featvis reports them
        # Only now, with visualizations to make: finding the smallest input takes several passes.
        size = loaded.preprocess.input_size
        smallest = size if loaded.fixed_input else smallest_input(loaded.module, plan.layers, size)
        fitted = input_resized(loaded.module, smallest, loaded.fixed_input)
        done = 0
        chunk_size = channels_per_call(settings, run.device)
        # On a GPU a call's images are encoded and stored while the GPU optimizes the next call's
        # (28 ms a unit on the H100 machine: minutes of a GoogLeNet atlas); on CPU the two would
        # compete for the same cores, so a call's images are stored before the next call starts.
        with fitted, run.bar(total, f"{plan.config.name}: feature visualization", "img-step") as bar, \
                threads.later(run.device.type == "cuda") as stores:
            for layer, layer_tasks in by_layer.items():
                for start in range(0, len(layer_tasks), chunk_size):
                    run.check_stop()
                    chunk = layer_tasks[start:start + chunk_size]
                    bar.set_postfix_str(f"{layer} {chunk[0].channel}-{chunk[-1].channel}, {done} of {len(tasks)} units done")
                    result = visualize_channels(loaded.module, layer, [t.channel for t in chunk], settings,
                                                loaded.preprocess, run.device, progress=bar.update)
                    stores.wait()  # the call before's images: one call's at most wait in memory
                    stores.submit(functools.partial(_store_all, run, chunk, result))
                    done += len(chunk)

    def contribute(self, layer):
        from atlasgen.related import cross_activation

        entries = layer.channel_entries(self.name)
        responses = {c: e.arrays() for c, e in entries.items() if e is not None}
        grouped = objectives.grouped_names()
        for unit in layer.units:
            entry = entries.get(unit.channel)
            if entry is not None:
                _add_images(unit, entry, responses[unit.channel], grouped)
        stats = layer.arrays("similarity")
        if stats is not None and responses:
            order = sorted(responses)
            matrix = np.stack([responses[c]["layer_response"] for c in order])
            top_n = layer.model.config.stages.similarity.top_n
            cross = dict(zip(order, cross_activation(matrix, order, stats["mean"], stats["std"], top_n)))
            for unit in layer.units:
                if unit.channel in cross:
                    unit.cross = [Related(int(o), float(s)) for o, s in cross[unit.channel]]


def _store_all(run, tasks: list, result) -> None:
    """Store each task's images (encoded on a thread per core) and numbers, in task order."""
    with threads.pool() as pool:
        encoded = pool.map(lambda i: _files(result, i), range(len(tasks)))
        for i, (task, files) in enumerate(zip(tasks, encoded)):
            run.store(task, files, _arrays(result, i))


def _arrays(result, i: int) -> dict[str, np.ndarray]:
    """The `i`-th channel's numbers: each objective's activation and the layer's response."""
    arrays = {f"activation_{name}": np.asarray(values[i], dtype=np.float32) for name, values in result.activation.items()}
    arrays["layer_response"] = np.asarray(result.layer_response[i], dtype=np.float32)
    return arrays


def _files(result, i: int) -> dict[str, bytes]:
    """The PNG files of the `i`-th channel's images."""
    files = {}
    grouped = objectives.grouped_names()
    for name, array in result.images.items():
        if name in grouped:
            files.update({f"{name}-{k}.png": images.encode(image, "png") for k, image in enumerate(array[i])})
        else:
            files[f"{name}.png"] = images.encode(array[i], "png")
    return files


def _add_images(unit, entry, arrays, grouped: frozenset[str]) -> None:
    members = []
    for name in entry.meta["files"]:
        member = _SET_MEMBER.fullmatch(name)
        if member and member["name"] in grouped:
            members.append((int(member["index"]), entry.file(name)))
        elif name.endswith(".png"):
            unit.images[name[:-4]] = entry.file(name)
    unit.diversity = [path for _, path in sorted(members)]
    unit.activation = {k[len("activation_"):]: float(v) for k, v in arrays.items() if k.startswith("activation_")}


register(FeatureVisualization())
