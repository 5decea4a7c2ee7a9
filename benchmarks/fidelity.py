"""Fidelity of the feature visualizations: does each image reach what its unit can do?

Per layer, over a few live channels (spread evenly over the layer), with atlasgen's default
visualization settings at the image size asked for:

- channel:  the channel image's spatial mean beats the channel's top-1 dataset image (spatial means);
- neuron:   the neuron image's centre unit beats the dataset's maximum over every image and position;
- negative: the negative image's spatial mean reaches the dataset's lowest spatial mean (<=);
- for a layer that is affine in the input (a convolution without nonlinearity, batch norm folded),
  the exact optimum over images in [0, 1]: value(0) + sum(relu(gradient)), and the fraction of it
  the channel and neuron images reach, and their share of the attainable range (exact minimum to
  exact maximum), which stays meaningful where the optimum is near zero.

The dataset is generated demo images (a seed no model trained on), resized to the same size as
the visualizations, so both are measured on the same input size. A channel is live when its
spatial mean varies over the dataset.

Models: `demo` (the shipped DemoNet weights) and `small` (DemoNet trained here from seed 1 for
2 epochs on 3,000 images, cached in --work; a different, less-trained network of the same shape).

    python benchmarks/fidelity.py --model demo --size 32 --channels 6 --png /tmp/fidelity
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from atlasgen.demo.data import generate_arrays
from atlasgen.demo.net import DEMO_MEAN, DEMO_STD, build_demo_model, load_weights, seeded_demo_net
from atlasgen.featvis import visualize_channels
from atlasgen.hooks import eval_mode, forward_layers
from atlasgen.settings import Preprocess, VisSettings

LAYERS = ("conv1", "conv2", "conv3", "conv4")
DATA_SEED = 987_654  # not a training or test seed of the demo
SMALL_SEED, SMALL_EPOCHS, SMALL_IMAGES = 1, 2, 3000
PREPROCESS = Preprocess(64, DEMO_MEAN, DEMO_STD)


def load_model(name: str, work: Path) -> torch.nn.Module:
    if name == "demo":
        return build_demo_model()
    path = work / f"small-seed{SMALL_SEED}-{SMALL_EPOCHS}ep-{SMALL_IMAGES}.pt"
    if not path.is_file():
        from atlasgen.demo.train import train

        work.mkdir(parents=True, exist_ok=True)
        train(path, seed=SMALL_SEED, epochs=SMALL_EPOCHS, train_images=SMALL_IMAGES, test_images=500, log=logging.info)
    model = seeded_demo_net(SMALL_SEED)
    load_weights(model, path)
    return model.eval()


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS.std).view(1, 3, 1, 1)
    return (images - mean) / std


def dataset(count: int, size: int) -> torch.Tensor:
    pixels, _ = generate_arrays(count, seed=DATA_SEED)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return images.clamp(0, 1)


@torch.no_grad()
def dataset_stats(model: torch.nn.Module, layers: list[str], images: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    """Per layer and channel: the highest and lowest spatial mean, and the highest single unit."""
    stats: dict[str, dict[str, list]] = {layer: {"top": [], "low": [], "unit": []} for layer in layers}
    for start in range(0, len(images), 100):
        acts = forward_layers(model, normalize(images[start:start + 100]), layers)
        for layer in layers:
            act = acts[layer].float()
            means = act.mean(dim=(2, 3))
            stats[layer]["top"].append(means.max(dim=0).values)
            stats[layer]["low"].append(means.min(dim=0).values)
            stats[layer]["unit"].append(act.amax(dim=(0, 2, 3)))
    return {layer: {"top": torch.stack(s["top"]).amax(0).numpy(), "low": torch.stack(s["low"]).amin(0).numpy(),
                    "unit": torch.stack(s["unit"]).amax(0).numpy()} for layer, s in stats.items()}


def live_channels(model: torch.nn.Module, layer: str, images: torch.Tensor, count: int) -> list[int]:
    with torch.no_grad():
        means = forward_layers(model, normalize(images[:200]), [layer])[layer].float().mean(dim=(2, 3))
    live = torch.nonzero(means.std(dim=0) > 1e-6 * means.abs().max().clamp_min(1e-12)).flatten().tolist()
    picks = np.linspace(0, len(live) - 1, min(count, len(live))).round().astype(int)
    return [live[i] for i in sorted(set(picks))]


def affine_optimum(model: torch.nn.Module, layer: str, channel: int, size: int) -> dict[str, float] | None:
    """The exact maxima over [0, 1] images of the channel's spatial mean and of its centre unit,
    when the layer is affine in the image (else None)."""
    def values(x: torch.Tensor) -> torch.Tensor:
        act = forward_layers(model, normalize(x), [layer])[layer][:, channel]
        h, w = act.shape[-2:]
        return torch.stack([act.mean(dim=(1, 2)), act[:, h // 2, w // 2]], dim=1)

    generator = torch.Generator().manual_seed(0)
    probes = torch.rand(2, 3, size, size, generator=generator)
    zero = torch.zeros(1, 3, size, size)
    with eval_mode(model, frozen=True):
        grads = []
        for which in range(2):
            x = probes[:1].clone().requires_grad_(True)
            grads.append(torch.autograd.grad(values(x)[0, which], x)[0])
        with torch.no_grad():
            base = values(zero)[0]
            # Affine: value(x) = value(0) + grad . x for other images too.
            predicted = base + torch.stack([(g * probes[1:]).sum() for g in grads])
            if not torch.allclose(values(probes[1:])[0], predicted, rtol=1e-3, atol=1e-3 * base.abs().max().item() + 1e-4):
                return None
    best = [float(base[i] + grads[i].clamp_min(0).sum()) for i in range(2)]
    worst = [float(base[i] + grads[i].clamp_max(0).sum()) for i in range(2)]
    return {"channel": best[0], "neuron": best[1], "channel_min": worst[0], "neuron_min": worst[1]}


def save_png(path: Path, result, channels: list[int]) -> None:
    rows = [np.concatenate([result.images[o][i] for o in ("channel", "negative", "neuron")], axis=1) for i in range(len(channels))]
    grid = np.concatenate(rows, axis=0)
    scale = max(1, 384 // grid.shape[1])
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(path)


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = load_model(args.model, args.work)
    images = dataset(args.images, args.size)
    stats = dataset_stats(model, list(args.layers), images)
    settings = VisSettings(objectives=("channel", "negative", "neuron"), size=args.size,
                           **({"steps": args.steps} if args.steps else {}))
    report = {"model": args.model, "size": args.size, "steps": settings.steps, "images": args.images, "layers": {}}
    for layer in args.layers:
        channels = live_channels(model, layer, images, args.channels)
        began = time.perf_counter()
        result = visualize_channels(model, layer, channels, settings, PREPROCESS, torch.device("cpu"))
        s = stats[layer]
        row = {
            "channels": channels,
            "seconds": round(time.perf_counter() - began, 1),
            "channel": [float(v) for v in result.activation["channel"]],
            "top1": [float(s["top"][c]) for c in channels],
            "neuron": [float(v) for v in result.activation["neuron"]],
            "unit_max": [float(s["unit"][c]) for c in channels],
            "negative": [float(v) for v in result.activation["negative"]],
            "lowest": [float(s["low"][c]) for c in channels],
        }
        row["channel_beats"] = sum(a > b for a, b in zip(row["channel"], row["top1"]))
        row["neuron_beats"] = sum(a > b for a, b in zip(row["neuron"], row["unit_max"]))
        row["negative_beats"] = sum(a <= b for a, b in zip(row["negative"], row["lowest"]))
        optima = [affine_optimum(model, layer, c, args.size) for c in channels]
        if all(o is not None for o in optima):
            row["optimum_channel"] = [a / o["channel"] for a, o in zip(row["channel"], optima)]
            row["optimum_neuron"] = [a / o["neuron"] for a, o in zip(row["neuron"], optima)]
            # Where the optimum is near 0 (a zero-sum edge filter's spatial mean) a / optimum says
            # little; the share of the attainable range [exact minimum, exact maximum] does.
            for kind in ("channel", "neuron"):
                row[f"range_{kind}"] = [(a - o[f"{kind}_min"]) / (o[kind] - o[f"{kind}_min"])
                                        for a, o in zip(row[kind], optima)]
        report["layers"][layer] = row
        if args.png:
            args.png.mkdir(parents=True, exist_ok=True)
            save_png(args.png / f"{args.model}-{args.size}-{layer}.png", result, channels)
        n = len(channels)
        line = (f"{args.model} {args.size}px {layer}: channel {row['channel_beats']}/{n}, neuron {row['neuron_beats']}/{n}, "
                f"negative {row['negative_beats']}/{n}")
        if "optimum_channel" in row:
            line += (f", of exact optimum: channel min {min(row['optimum_channel']):.3f}, "
                     f"neuron min {min(row['optimum_neuron']):.3f}; of the attainable range: channel min "
                     f"{min(row['range_channel']):.3f}, neuron min {min(row['range_neuron']):.3f}")
        logging.info("%s (%.1f s)", line, row["seconds"])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("demo", "small"), default="demo")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=6, help="live channels per layer, spread over the layer")
    parser.add_argument("--layers", nargs="+", default=list(LAYERS))
    parser.add_argument("--steps", type=int, default=0, help="optimization steps; 0 = the default setting")
    parser.add_argument("--images", type=int, default=500, help="dataset images")
    parser.add_argument("--work", type=Path, default=Path("/tmp/atlasgen-fidelity"))
    parser.add_argument("--png", type=Path, default=None, help="write a channel | negative | neuron grid per layer here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
