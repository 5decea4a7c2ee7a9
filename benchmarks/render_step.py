"""The render step of a build, alone, on an atlas already computed: assembling the site data from
the cache, then `render_site`, as `atlasgen build` runs them when every task is cached. Made
for the whole GoogLeNet preview atlas of `whole_atlas.py` (`--keep FOLDER` keeps it):

    python benchmarks/render_step.py FOLDER                # warm: into FOLDER's site, nothing changed
    python benchmarks/render_step.py FOLDER --changed      # every visualization changed (see below)
    python benchmarks/render_step.py FOLDER --cold /tmp/x  # into an empty folder (removed after)

The cache is first checked as a build's plan step does (timed apart: it counts as the plan). Each
timing prints wall-clock and CPU seconds, the forked processes' included: on a shared machine the
CPU seconds compare better.
`--changed` hands each unit its neighbour's visualization (images and measurements), so every
visualization copy and every unit page differs from what the folder holds, as after a rebuild
in which the visualization stage's version went up; the next plain run changes them all back.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and of the processes it forked and waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a computed atlas: its atlas.toml, cache and site")
    parser.add_argument("--changed", action="store_true", help="every unit shows its neighbour's visualization")
    parser.add_argument("--cold", type=Path, help="render into this new folder instead of the atlas's site")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("atlasgen.render").setLevel(logging.DEBUG)  # the seconds of each part of a render

    from atlasgen.assemble import site_data
    from atlasgen.build import BuildSummary, _missing
    from atlasgen.cache import Cache
    from atlasgen.config import load_config
    from atlasgen.heap import few_full_collections
    from atlasgen.plan import load_plan, plan_key_for
    from atlasgen.render import render_site

    os.chdir(args.folder)
    config = load_config(Path("atlas.toml"))
    cache = Cache(config.site.cache)
    plans = load_plan(config, cache, plan_key_for(config, cache))
    began, cpu = time.perf_counter(), _cpu()
    if plans is None or _missing(cache, [task for plan in plans for task in plan.tasks], False, BuildSummary()):
        raise SystemExit(f"{args.folder} is not fully computed: run atlasgen build there first")
    checked, checked_cpu = time.perf_counter() - began, _cpu() - cpu
    output = args.cold or config.site.output
    if args.cold and args.cold.exists():
        raise SystemExit(f"{args.cold} exists: --cold renders into a new folder")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    print(f"checking the cache (the plan step): {checked:.1f} s ({checked_cpu:.1f} s of CPU)")
    began, cpu = time.perf_counter(), _cpu()
    with few_full_collections():  # as `atlasgen build` assembles and renders
        site = site_data(config, plans, cache)
        if args.changed:
            for layer in (layer for model in site.models for layer in model.layers):
                units = [u for u in layer.units if u.images]
                moved = [(u.images, u.activation, u.still) for u in units[1:] + units[:1]]
                for unit, (images, activation, still) in zip(units, moved):
                    unit.images, unit.activation, unit.still = images, activation, still
        assembled, assembled_cpu = time.perf_counter(), _cpu()
        report = render_site(site, output, config.site.templates, config.site.notes)
    done, done_cpu = time.perf_counter(), _cpu()
    print(f"render step: {done - began:.1f} s ({done_cpu - cpu:.1f} s of CPU): assembling the site data "
          f"{assembled - began:.1f} s ({assembled_cpu - cpu:.1f} s of CPU), render_site {done - assembled:.1f} s "
          f"({done_cpu - assembled_cpu:.1f} s of CPU); {report.pages} pages, {report.files} files, {report.bytes / 1e6:.0f} MB")
    if args.cold:
        shutil.rmtree(args.cold)


if __name__ == "__main__":
    main()
