"""The whole GoogLeNet atlas (every channel of its 12 default layers, 5,808 units) end to end,
for the site's shape and cost: seconds per stage, render seconds, site size and file count,
the largest page with the images it loads, and Chromium's load time of the 1,024-channel layer
page.

GoogLeNet is torchvision's, with its seeded random initialization (nothing is downloaded); the
dataset is generated. The build uses the preview setting with one objective and `--steps`
optimization steps (the visualizations' quality does not change the site's shape or size):

    python benchmarks/whole_atlas.py --steps 2 --images 64

With --full, the atlas at the default settings instead (every objective, 256 steps at 128 px,
10 + 10 examples) over --images generated 320x240 JPEGs, on --device (a GPU, say):

    python benchmarks/whole_atlas.py --full --images 1000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dataset_pass's JPEG writer

PREVIEW = """
[build]
device = "{device}"
preview = true
[visualize]
objectives = ["channel"]
steps = {steps}
[examples]
max_images = {images}
"""

FULL = """
[build]
device = "{device}"
[examples]
max_images = {images}
"""

CONFIG = """
[site]
title = "GoogLeNet, whole atlas"
budget_mb = 0  # measured, not published: GitHub Pages' 1,000 MB does not bound it
{settings}
[[models]]
name = "googlenet"
arch = "googlenet"
dataset = "images"
"""

LOAD_SCRIPT = """
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const start = Date.now();
  await page.goto(process.argv[2], { waitUntil: 'load' });
  const load = Date.now() - start;
  const timing = await page.evaluate(() => JSON.stringify(performance.getEntriesByType('navigation')[0]));
  const images = await page.evaluate(() => performance.getEntriesByType('resource').filter(r => r.initiatorType === 'img').length);
  console.log(JSON.stringify({ load_ms: load, navigation: JSON.parse(timing), images_loaded: images }));
  await browser.close();
})();
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temporary folder)")
    parser.add_argument("--full", action="store_true", help="the default settings instead of the preview")
    parser.add_argument("--device", default="cpu", help="build.device: cpu, cuda, auto, ...")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines off a terminal

    from atlasgen.build import BuildOptions, build
    from atlasgen.config import load_config
    from atlasgen.demo import write_demo_dataset

    root = args.keep or Path(tempfile.mkdtemp(prefix="whole-atlas-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.full:
        from dataset_pass import write_images

        write_images(root / "images", args.images)
    else:
        write_demo_dataset(root / "images", count=args.images, seed=11)
    settings = (FULL if args.full else PREVIEW).format(steps=args.steps, images=args.images, device=args.device)
    (root / "atlas.toml").write_text(CONFIG.format(settings=settings))
    began = time.perf_counter()
    summary = build(load_config(root / "atlas.toml"), BuildOptions(progress=True))
    total = time.perf_counter() - began
    units = sum(summary.computed.get(kind, 0) for kind in ("featvis",))
    print(f"built {units} units in {total:.0f} s; seconds per stage: "
          + ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in summary.seconds.items()))
    if torch.cuda.is_available() and args.device != "cpu":
        print(f"GPU {torch.cuda.get_device_name()}: peak memory allocated {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
              f"of {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")

    began = time.perf_counter()
    again = build(load_config(root / "atlas.toml"), BuildOptions(progress=False))
    print(f"rebuild with nothing changed (render from the saved plan): {time.perf_counter() - began:.1f} s, "
          f"render {again.seconds.get('render', 0):.1f} s")

    site = root / "site"
    files = [p for p in site.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    pages = [p for p in files if p.suffix == ".html"]
    largest = max(pages, key=lambda p: p.stat().st_size)
    print(f"site: {size / 2**20:.1f} MB in {len(files)} files ({len(pages)} pages); largest page "
          f"{largest.relative_to(site)} {largest.stat().st_size / 1024:.0f} KB with "
          f"{largest.read_text().count('<img')} images")

    index = site / "assets" / "search-index.js"
    # from the layers' twins: an image several examples show is one shared file
    bottoms = sum(1 for twin in site.glob("*/*/index.json") for unit in json.loads(twin.read_text())["units"]
                  for example in unit["examples"]["bottom"] if example["patch"])
    print(f"search index {index.stat().st_size / 1e6:.2f} MB; {bottoms} weakest examples shown "
          f"(ties at zero are not); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    browser_dir = Path(__file__).resolve().parent.parent / "tests" / "browser"
    if shutil.which("node") and (browser_dir / "node_modules" / "playwright-core").is_dir():
        script = browser_dir / ".whole-atlas-load.js"
        script.write_text(LOAD_SCRIPT)
        try:
            page = site / "googlenet" / "inception5b" / "index.html"
            run = subprocess.run(["node", script.name, page.as_uri()], cwd=browser_dir, capture_output=True, text=True)
            result = json.loads(run.stdout.strip().splitlines()[-1])
            nav = result["navigation"]
            print(f"Chromium, inception5b (1,024 channels): load event at {nav['loadEventEnd']:.0f} ms, "
                  f"DOM content loaded at {nav['domContentLoadedEventEnd']:.0f} ms, "
                  f"{result['images_loaded']} images fetched before load")
        finally:
            script.unlink(missing_ok=True)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
