"""Work finished behind the computation, as a build does on a GPU (a call's images stored while the
next call is optimized, the dataset examples drawn while the feature visualization runs), against
all of it done in turn as before (each unit's images encoded and stored one by one before the next
call, the examples drawn before the next stage): the feature visualization's seconds and the
whole build's, for one GoogLeNet layer (seeded random weights) at the default settings, each way
in a fresh folder, on --device. (Run 15 measured the first part alone, before the second existed.)

    python3 benchmarks/store_overlap.py --layer inception3b --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # dataset_pass's JPEG writer
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import atlasgen.stages.featvis as featvis  # noqa: E402
from atlasgen import threads  # noqa: E402
from atlasgen.build import BuildOptions, build  # noqa: E402
from atlasgen.config import load_config  # noqa: E402

CONFIG = """
[site]
title = "store overlap"
[build]
device = "{device}"
[examples]
max_images = {images}
{visualize}
[[models]]
name = "googlenet"
arch = "googlenet"
layers = ["{layer}"]
dataset = "{dataset}"
"""


def stored_one_by_one(run, tasks, result) -> None:  # noqa: ANN001
    """The stage's store before this change: each unit's images encoded and stored in turn."""
    for i, task in enumerate(tasks):
        run.store(task, featvis._files(result, i), featvis._arrays(result, i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="inception3b")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, help="fewer optimization steps than the default (a quick check)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from dataset_pass import write_images

    root = Path(tempfile.mkdtemp(prefix="store-overlap-"))
    write_images(root / "images", args.images)
    real_store, real_later = featvis._store_all, threads.later
    for way in ("one by one", "behind", "one by one", "behind")[: 2 if args.device != "cpu" else 4]:
        folder = root / way.replace(" ", "-") / str(time.monotonic_ns())
        folder.mkdir(parents=True)
        (folder / "atlas.toml").write_text(CONFIG.format(device=args.device, images=args.images, layer=args.layer,
                                                         dataset=root / "images",
                                                         visualize=f"[visualize]\nsteps = {args.steps}" if args.steps else ""))
        with contextlib.ExitStack() as undo:
            if way == "one by one":
                featvis._store_all, threads.later = stored_one_by_one, lambda _background: real_later(False)
                undo.callback(lambda: (setattr(featvis, "_store_all", real_store), setattr(threads, "later", real_later)))
            began = time.perf_counter()
            summary = build(load_config(folder / "atlas.toml"), BuildOptions(progress=False))
            whole = time.perf_counter() - began
        print(f"{args.layer}, {summary.computed['featvis']} units, {way}: feature visualization "
              f"{summary.seconds['feature visualization']:.1f} s, whole build {whole:.1f} s", flush=True)


if __name__ == "__main__":
    main()
