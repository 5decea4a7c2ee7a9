"""Bytes of feature visualizations on the site: lossless PNG (as the feature-visualization stage
stores them) against full-colour JPEG copies (`[site.images] visualizations = "jpeg"`, as the
featvis_files stage writes them), at the default visualization settings, and what each costs a
whole atlas; beside it, how far a JPEG copy's activation is from its lossless image's.

Models: torchvision GoogLeNet from a seeded random initialization (no pretrained weights can be
downloaded here; its images are busier than a trained network's, so its bytes are an upper
estimate) and the shipped demo network. Channels spread evenly over each layer.

    python benchmarks/site_bytes.py --channels 8 --size 128
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featvis_vs_lucent import build_weights, load_model, spread  # noqa: E402

from atlasgen.featvis import visualize_channels  # noqa: E402
from atlasgen.featvis.batch import ImageSpec  # noqa: E402
from atlasgen.featvis.optimize import final_scores  # noqa: E402
from atlasgen.images import encode  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402

log = logging.getLogger("site_bytes")
GOOGLENET_UNITS = 5808  # the default GoogLeNet atlas (README, "The whole GoogLeNet atlas")
SCORED = ("channel", "neuron", "negative")  # one image per channel, scored alone


def models(names: list[str]):
    for name in names:
        if name == "googlenet":
            model = load_model(build_weights(Path("/tmp/atlasgen-featvis-bench/googlenet_seed0.pt")))
            yield name, model, Preprocess(), ["inception3a", "inception4c", "inception5b"]
        else:
            from atlasgen.demo import DEMO_INPUT_SIZE, DEMO_MEAN, DEMO_STD, build_demo_model

            model = build_demo_model(pretrained=True).eval()
            yield name, model, Preprocess(DEMO_INPUT_SIZE, tuple(DEMO_MEAN), tuple(DEMO_STD)), ["conv2", "conv4"]


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["googlenet", "demo"])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--quality", type=int, default=85, help="[site.images] quality")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = VisSettings(size=args.size, steps=args.steps)  # every default objective
    cpu = torch.device("cpu")
    print(f"| model | layer | images | PNG kB per image | JPEG q{args.quality} 4:4:4 kB | JPEG / PNG | "
          "JPEG copy's activation / lossless, median (worst) |")
    print("|---|---|---|---|---|---|---|")
    totals: dict[str, dict[str, list[int]]] = {}  # model -> format -> bytes of each image
    for name, model, preprocess, layers in models(args.models):
        for layer in layers:
            with torch.no_grad():
                probe = torch.rand(1, 3, args.size, args.size)
                from atlasgen.hooks import forward_layers

                width = forward_layers(model, probe, [layer])[layer].shape[1]
            channels = spread(width, args.channels)
            result = visualize_channels(model, layer, channels, settings, preprocess, cpu)
            png, jpeg, ratios = [], [], []
            for objective, array in result.images.items():
                pictures = array.reshape(-1, *array.shape[-3:])
                coded = [(encode(p, "png"), encode(p, "jpeg", args.quality, full_colour=True)) for p in pictures]
                png += [len(a) for a, _ in coded]
                jpeg += [len(b) for _, b in coded]
                if objective in SCORED:
                    specs = [ImageSpec(c, objective, 0) for c in channels]
                    as_float = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
                    exact, _ = final_scores(model, layer, as_float([decoded(a) for a, _ in coded]), specs, settings, preprocess, cpu)
                    copy, _ = final_scores(model, layer, as_float([decoded(b) for _, b in coded]), specs, settings, preprocess, cpu)
                    ratios += [float(c / e) for c, e in zip(copy, exact) if abs(float(e)) > 1e-6]
            totals.setdefault(name, {"png": [], "jpeg": []})
            totals[name]["png"] += png
            totals[name]["jpeg"] += jpeg
            ratio = f"{np.median(ratios):.3f} ({min(ratios):.3f})" if ratios else "n/a"
            print(f"| {name} | {layer} | {len(png)} | {np.mean(png) / 1e3:.1f} | {np.mean(jpeg) / 1e3:.1f} | "
                  f"{np.mean(jpeg) / np.mean(png):.2f} | {ratio} |", flush=True)
    per_unit = settings.diversity + 3
    for name, formats in totals.items():
        for fmt, sizes in formats.items():
            print(f"{name} {fmt}: {np.mean(sizes) / 1e3:.1f} kB per image over {len(sizes)}; at that, a whole GoogLeNet "
                  f"atlas ({GOOGLENET_UNITS} units x {per_unit} images): {GOOGLENET_UNITS * per_unit * np.mean(sizes) / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
