"""Render time of a whole-GoogLeNet-sized atlas, without computing one: a synthetic `SiteData`
with GoogLeNet's 12 default layers (5,808 units; the layer sizes of torchvision's googlenet),
every unit with one feature visualization, 10 strongest and 10 weakest dataset patches, and
heat maps on the layers whose receptive field covers a 64 px input (as in the preview build),
all real small WebP files in a folder laid out like the cache.

It times `render_site` three ways: into an empty folder (cold), again with nothing changed
(warm: the rebuild case), and, with `--profile`, prints cProfile's top functions of a cold
render:

    python benchmarks/render_speed.py                 # cold and warm render
    python benchmarks/render_speed.py --profile 25    # and where a cold render's time goes
    python benchmarks/render_speed.py --layers 3      # fewer layers, for a quick look
    python benchmarks/render_speed.py --processes 1 2 --rounds 3   # pages in this process against 2 forked

By default it renders twice: with the pages in this process, then in a process per core.

Before and after a change, on the same fake cache: export an older commit and put it first on
the path, with its templates (`git archive OLD | tar -x -C /tmp/old`, then
`PYTHONPATH=/tmp/old python benchmarks/render_speed.py --templates /tmp/old/templates`).

The fake cache (about 190,000 files) is generated once under `--work` and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import logging
import os
import pstats
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from atlasgen import forks
from atlasgen.sitedata import Example, LayerData, ModelData, ReceptiveFieldInfo, Related, SiteData, UnitData

# torchvision googlenet's default layers at a 64 px input: (name, channels, feature map, covers the input)
LAYERS = [
    ("conv1", 64, 32, False), ("conv2", 64, 16, False), ("conv3", 192, 16, False),
    ("inception3a", 256, 8, False), ("inception3b", 480, 8, True), ("inception4a", 512, 4, True),
    ("inception4b", 512, 4, True), ("inception4c", 512, 4, True), ("inception4d", 528, 4, True),
    ("inception4e", 832, 4, True), ("inception5a", 832, 2, True), ("inception5b", 1024, 2, True),
]
EXAMPLES = 10  # strongest and weakest each, as in the default [examples]
POOL = 64  # distinct image contents; every file still has its own path, as in the cache


def _pool(size: int) -> list[bytes]:
    rng = np.random.default_rng(size)
    out = []
    for _ in range(POOL):
        pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((size, size)).save(buffer, format="WEBP", quality=80)
        out.append(buffer.getvalue())
    return out


def _file(path: Path, data: bytes, digests: dict[str, str]) -> Path:
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    digests[str(path)] = hashlib.sha256(data).hexdigest()  # as a build knows them, from the cache's meta
    return path


def make_site(cache: Path, layers: list[tuple[str, int, int, bool]]) -> SiteData:
    """The synthetic atlas; image files are written under `cache` unless already there."""
    vis, patches = _pool(64), _pool(32)
    digests: dict[str, str] = {}
    rng = np.random.default_rng(0)
    model = ModelData(name="googlenet", arch="googlenet", weights="googlenet.pth", dataset="images", input_size=64)
    for name, channels, size, covers in layers:
        layer = LayerData(name=name, channels=channels, shape=(channels, size, size),
                          receptive_field=ReceptiveFieldInfo(size=(64, 64) if covers else (19, 19), stride=(8, 8), covers_input=covers))
        entry = cache / "dataset" / name[:2] / name
        for c in range(channels):
            unit = UnitData(channel=c, images={"channel": _file(cache / "featvis" / name / f"{c}.webp", vis[c % POOL], digests)})
            for side, target in (("top", unit.top), ("bottom", unit.bottom)):
                for rank in range(EXAMPLES):
                    data = patches[(c + rank) % POOL]
                    target.append(Example(
                        source=f"img{(c * 7 + rank) % 64:03d}.jpg", box=(0, 0, 32, 32),
                        # every inception output follows a ReLU: the weakest are ties at zero
                        value=float(rng.uniform(1, 9)) if side == "top" else 0.0, position=(rank % size, c % size),
                        patch=_file(entry / f"{c}/{side}-{rank}.webp", data, digests),
                        heatmap=_file(entry / f"{c}/{side}-{rank}-heat.webp", vis[(c + rank) % POOL], digests) if covers else None,
                    ))
            unit.dataset_max, unit.dataset_mean, unit.dataset_std = float(rng.uniform(1, 9)), float(rng.uniform(0, 1)), 1.0
            unit.selectivity = unit.dataset_max - unit.dataset_mean
            unit.activation = {"channel": float(rng.uniform(1, 20))}
            others = rng.choice(channels, size=9, replace=False)
            unit.similar = [Related(int(o), float(rng.uniform(-1, 1))) for o in others if o != c][:8]
            unit.cross = [Related(int(o), float(rng.uniform(0, 4))) for o in others[::-1] if o != c][:8]
            layer.units.append(unit)
        model.layers.append(layer)
    site = SiteData(title="GoogLeNet, synthetic", authors=["A. Author"], url="https://example.org/atlas/", version="bench",
                    built="2026-01-01", config_digest="0" * 64, image_format="webp", models=[model])
    site.file_digests = digests  # set after: an older atlasgen (PYTHONPATH, for a before/after) lacks the field
    return site


@contextlib.contextmanager
def timed(label: str):
    """Wall clock and CPU seconds of the block, the CPU of the processes it forked included."""
    began, cpu = time.perf_counter(), _cpu()
    extra: list[str] = []
    yield extra
    print(f"{label}: {time.perf_counter() - began:.1f} s ({_cpu() - cpu:.1f} s of CPU){''.join(extra)}")


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "atlasgen-render-speed",
                        help="the fake cache is kept here between runs (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=len(LAYERS), help="render only the first N layers")
    parser.add_argument("--templates", type=Path, help="templates searched first (an older commit's, for a before/after)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, forks.processes()],
                        help="render with at most N processes for pages, each in turn (1: in this process; default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of every --processes value")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile a cold render, print the top N functions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("atlasgen.render").setLevel(logging.DEBUG)  # the seconds of each part of a render
    from atlasgen.render import render_site

    layers = LAYERS[: args.layers]
    began = time.perf_counter()
    site = make_site(args.work / "cache", layers)
    units = sum(len(layer.units) for layer in site.models[0].layers)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{units} units over {len(layers)} layers ready in {time.perf_counter() - began:.1f} s (fake cache {args.work / 'cache'})")

    output = args.work / "site"
    for round_ in range(args.rounds):
        for count in args.processes:
            forks.MAX_PROCESSES = count
            label = f"round {round_ + 1}, {'pages rendered here' if count == 1 else f'up to {count} processes'}"
            shutil.rmtree(output, ignore_errors=True)
            with timed(f"{label}, cold render") as extra:
                report = render_site(site, output, args.templates)
                extra.append(f", {report.pages} pages, {report.files} files, {report.bytes / 1e6:.0f} MB")
            with timed(f"{label}, warm render (nothing changed)"):
                render_site(site, output, args.templates)

    if args.profile:
        shutil.rmtree(output, ignore_errors=True)
        profiler = cProfile.Profile()
        profiler.runcall(render_site, site, output, args.templates)
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.profile)
        stats.sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
