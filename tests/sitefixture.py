"""A realistic, small `SiteData` for tests: generated image files in a folder standing in
for the cache, two models, a dotted layer name, a dead channel, a channel subset (so some
similar channels are not in the atlas), heat maps on some examples.

    from sitefixture import make_site_data, site_link_problems
    site = make_site_data(tmp_path / "cache", url="https://example.org/atlas/")
"""

from __future__ import annotations

import hashlib
import posixpath
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from atlasgen.sitedata import (
    Example,
    LayerData,
    ModelData,
    ReceptiveFieldInfo,
    Related,
    SiteData,
    UnitData,
)

# (model, arch, [(layer, channels in the layer, rendered channels, feature-map size, receptive field)])
DEFAULT_MODELS = [
    (
        "demo",
        "demo-cnn",
        [
            ("conv1", 6, [0, 1, 2, 3, 4, 5], 32, ((5, 5), (1, 1), False)),
            ("conv2", 8, [0, 1, 2, 3, 5, 7], 16, ((14, 14), (2, 2), False)),
            ("layer3.0.conv", 12, [0, 2, 4, 6], 8, ((64, 64), (4, 4), True)),
        ],
    ),
    ("tiny", "resnet18", [("layer1", 4, [0, 1, 2, 3], 16, ((35, 35), (4, 4), False))]),
]
DEAD = {("demo", "conv2", 3)}  # one dead channel, to check it is labelled


def _image(path: Path, size: tuple[int, int], seed: str, fmt: str) -> Path:
    """A small deterministic image whose content depends on `seed`, so files differ."""
    if path.is_file():  # same seed, same pixels: reuse the file of an earlier call
        return path
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 255, size=3)
    pixels = (base + 60 * np.sin(xx[..., None] / rng.uniform(1, 4) + yy[..., None] / rng.uniform(1, 4))) % 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format={"jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return path


def _unit(cache: Path, model: str, layer: str, channel: int, layer_channels: int, fmt: str, dead: bool) -> UnitData:
    ext = "jpg" if fmt == "jpeg" else fmt
    key = f"{model}-{layer}-{channel}"
    folder = cache / "vis" / key[:2] / key
    rng = np.random.default_rng(channel + 7 * len(layer))
    images = {name: _image(folder / f"{name}.{ext}", (48, 48), f"{key}-{name}", fmt) for name in ("channel", "negative", "neuron")}
    diversity = [_image(folder / f"diversity-{i}.{ext}", (48, 48), f"{key}-div{i}", fmt) for i in range(3)]
    top, bottom = [], []
    if not dead:
        for i in range(4):
            src = f"class{i % 2}/img{(channel * 5 + i) % 17:03d}.png"
            top.append(
                Example(
                    source=src,
                    box=(-2 + i, 3, 30 + i, 35),
                    value=float(5.0 - i * 0.731 + channel * 0.1),
                    position=(i, channel % 4),
                    patch=_image(folder / f"top-{i}.{ext}", (32, 32), f"{key}-top{i}", fmt),
                    heatmap=_image(folder / f"top-{i}-heat.{ext}", (64, 64), f"{key}-heat{i}", fmt) if i < 2 else None,
                )
            )
        for i in range(2):
            bottom.append(
                Example(
                    source=f"class1/img{i:03d}.png",
                    box=(0, 0, 32, 32),
                    value=float(-1.0 - i / 3),
                    position=(0, i),
                    patch=_image(folder / f"bottom-{i}.{ext}", (32, 32), f"{key}-bottom{i}", fmt),
                )
            )
    others = [c for c in range(layer_channels) if c != channel]
    similar = [Related(channel=c, score=float(round(0.9 - 0.13 * j, 6))) for j, c in enumerate(others[:4])]
    cross = [Related(channel=c, score=float(2.5 - j / 3)) for j, c in enumerate(others[-3:])]
    return UnitData(
        channel=channel,
        images={} if dead else images,
        diversity=[] if dead else diversity,
        activation={} if dead else {"channel": 7.25 + channel, "negative": -3.5, "neuron": 4.0 + 1 / 3, "diversity": 6.0},
        dataset_max=0.0 if dead else float(4.0 + channel * 0.37),
        dataset_best_mean=0.0 if dead else float(1.0 + channel * 0.5),
        dataset_mean=0.0 if dead else float(rng.uniform(0, 1)),
        selectivity=None if dead else float(rng.uniform(0.5, 3.0)),
        dead=dead,
        top=top,
        bottom=bottom,
        similar=[] if dead else similar,
        cross=[] if dead else cross,
    )


def make_site_data(
    cache: Path,
    *,
    url: str | None = None,
    title: str = "Demo feature atlas",
    authors: list[str] | None = None,
    image_format: str = "webp",
    models: list | None = None,
) -> SiteData:
    """Build a `SiteData` whose images are real small files under `cache`."""
    site = SiteData(
        title=title,
        authors=["Ada Lovelace", "Alan M. Turing"] if authors is None else authors,
        url=url,
        version="0.1.0",
        built="2024-05-17",
        config_digest="3f2a" * 16,
        image_format=image_format,
    )
    for name, arch, layers in DEFAULT_MODELS if models is None else models:
        model = ModelData(name=name, arch=arch, weights=f"{name}.pt", dataset="shapes-1k", input_size=64)
        for layer, channels, rendered, size, (rf_size, stride, covers) in layers:
            data = LayerData(
                name=layer,
                channels=channels,
                shape=(channels, size, size),
                receptive_field=ReceptiveFieldInfo(size=rf_size, stride=stride, covers_input=covers),
            )
            data.units = [
                _unit(cache, name, layer, ch, channels, image_format, (name, layer, ch) in DEAD) for ch in rendered
            ]
            model.layers.append(data)
        site.models.append(model)
    return site


# --------------------------------------------------------------------------- link checking


class _PageScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag.attr, value); canonical links are "link.canonical"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        canonical = tag == "link" and ("rel", "canonical") in attrs
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if value is not None and name in ("href", "src"):
                self.links.append(("link.canonical" if canonical else f"{tag}.{name}", value))


def _scan(path: Path, cache: dict[Path, _PageScan]) -> _PageScan:
    if path not in cache:
        scan = _PageScan()
        scan.feed(path.read_text("utf-8"))
        cache[path] = scan
    return cache[path]


def site_link_problems(site_dir: Path, *, allow_absolute: tuple[str, ...] = ()) -> list[str]:
    """Every problem with the links of a built site: absolute or root-relative links, page
    links that do not end in `index.html`, missing targets and missing `#anchors`.
    `404.html` (served at any depth) and `<link rel="canonical">` may be absolute."""
    problems: list[str] = []
    pages: dict[Path, _PageScan] = {}
    for page in sorted(site_dir.rglob("*.html")):
        rel_page = page.relative_to(site_dir).as_posix()
        for where, link in _scan(page, pages).links:
            parts = urlsplit(link)
            if parts.scheme == "data":  # inline, nothing to fetch
                continue
            if parts.scheme or link.startswith("//"):
                if rel_page == "404.html" or where == "link.canonical" or link.startswith(allow_absolute):
                    continue
                problems.append(f"{rel_page}: absolute link {link}")
                continue
            if link.startswith("/"):
                problems.append(f"{rel_page}: root-relative link {link}")
                continue
            target = page if not parts.path else (page.parent / unquote(parts.path))
            target = Path(posixpath.normpath(target.as_posix()))
            if not target.is_relative_to(site_dir):
                problems.append(f"{rel_page}: link {link} leaves the site")
                continue
            if not target.exists():
                problems.append(f"{rel_page}: broken link {link}")
                continue
            if target.is_dir():
                problems.append(f"{rel_page}: link {link} is a folder (link to index.html)")
                continue
            if where == "a.href" and target.suffix == ".html" and target.name != "index.html" and target != page:
                problems.append(f"{rel_page}: page link {link} does not end in index.html")
            if parts.fragment and target.suffix == ".html":
                if parts.fragment not in _scan(target, pages).ids:
                    problems.append(f"{rel_page}: missing anchor {link}")
    return problems
