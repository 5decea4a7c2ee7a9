"""Feature visualizations re-encoded for the site, when `[site.images] visualizations` is not
"png": the optimized images stay lossless in the feature-visualization entries (their values are
measured on those pixels), and this stage stores a copy of each in the site's format. A whole
GoogLeNet atlas at 128 px holds about 40,000 visualizations; as PNG they are 24-37 kB each, 1.3 GB,
over GitHub Pages' 1 GB by themselves; as full-colour JPEG at quality 85, 0.31-0.39 of that
(README, "Site bytes"). Keyed on the visualization entry, the format and the quality, so changing
either re-encodes in seconds and never re-runs the optimization."""

from __future__ import annotations

import json

from atlasgen.images import EXTENSIONS
from atlasgen.plan import make_task
from atlasgen.stages import Stage, get, register


class FeatureVisualizationFiles(Stage):
    name = "featvis_files"
    version = 1
    order = 41  # after featvis, whose entries it reads and whose images it replaces on the pages
    title = "visualization files"

    def tasks(self, basis):
        fmt = basis.images.visualizations
        if fmt == "png":
            return []
        return [make_task(self.name, self.version, t.model, t.layer, t.channel,
                          {"featvis": t.key, "format": fmt, "quality": basis.images.quality})
                for t in get("featvis").tasks(basis)]

    def compute(self, run, plan, tasks):
        from PIL import Image

        from atlasgen.images import encode

        featvis = get("featvis")
        sources = {t.key: t for t in plan.tasks_of(featvis.name)}
        with run.bar(len(tasks), f"{plan.config.name}: visualization files", "unit") as bar:
            for task in tasks:
                run.check_stop()
                # The same rank computed this unit's visualizations (plan.shard deals each kind out
                # alike); ensure covers a build limited by --only.
                inputs = json.loads(task.inputs)
                entry = run.ensure(featvis, plan, sources[inputs["featvis"]])
                ext = EXTENSIONS[inputs["format"]]
                files = {}
                for name in entry.meta["files"]:
                    if name.endswith(".png"):
                        with Image.open(entry.file(name)) as image:
                            files[f"{name[:-4]}.{ext}"] = encode(image.convert("RGB"), inputs["format"], inputs["quality"],
                                                                  full_colour=True)
                run.store(task, files)
                bar.update(1)

    def contribute(self, layer):
        entries = layer.channel_entries(self.name)
        for unit in layer.units:
            entry = entries.get(unit.channel)
            if entry is None:
                continue
            by_stem = {name.rsplit(".", 1)[0]: entry.file(name) for name in entry.meta["files"]}
            unit.images = {name: by_stem.get(name, path) for name, path in unit.images.items()}
            unit.diversity = [by_stem.get(path.stem, path) for path in unit.diversity]


register(FeatureVisualizationFiles())
