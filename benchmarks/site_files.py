"""What one site image costs the file system, three ways, interleaved in chunks of 500 so that a
shared machine's load falls on each alike: written beside its place and renamed over it (how
the writer replaces a file), created in its place (`O_EXCL`, how it writes a new one), and a
hard link to the cache's file (not used: see the README). The images are a computed atlas's
cache files (`whole_atlas.py --keep FOLDER`), put into a new folder, 20 to a folder as on a
unit page:

    python benchmarks/site_files.py /tmp/atlas/.atlas-cache --files 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from atlasgen.render.writer import _create, _replace, _write_all

CHUNK = 500
WAYS = ("rename", "create", "link")


def _copier(source: str):  # noqa: ANN202
    def fill(fd: int) -> None:
        with open(source, "rb") as handle:
            _write_all(fd, handle.read())
    return fill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path, help="a computed atlas's cache folder")
    parser.add_argument("--files", type=int, default=10000, help="files per way")
    args = parser.parse_args()
    sources = sorted(os.path.join(here, name) for kind in ("dataset", "featvis")
                     for here, _, names in os.walk(args.cache / kind) for name in names if name.endswith(".webp"))
    need = args.files * len(WAYS)
    if len(sources) < need:
        raise SystemExit(f"{args.cache} holds {len(sources)} images; --files {len(sources) // len(WAYS)} at most")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    spent = {way: [0.0, 0.0] for way in WAYS}
    out = Path(tempfile.mkdtemp(prefix="site-files-", dir=args.cache.parent))
    try:
        for start in range(0, need, CHUNK * len(WAYS)):
            for k, way in enumerate(WAYS):
                batch = sources[start + k * CHUNK:start + (k + 1) * CHUNK]
                for j in range(0, len(batch), 20):
                    os.makedirs(out / way / str(start) / str(j))
                wall, cpu = time.perf_counter(), time.process_time()
                for j, source in enumerate(batch):
                    target = os.path.join(out, way, str(start), str(j - j % 20), f"{j}.webp")
                    if way == "rename":
                        _replace(target, _copier(source))
                    elif way == "create":
                        _create(target, _copier(source))
                    else:
                        os.link(source, target)
                spent[way][0] += time.perf_counter() - wall
                spent[way][1] += time.process_time() - cpu
    finally:
        shutil.rmtree(out)
    for way, (wall, cpu) in spent.items():
        print(f"{way}: {args.files} files, {wall:.1f} s ({cpu:.1f} s of CPU), {1e6 * wall / args.files:.0f} µs a file")


if __name__ == "__main__":
    main()
