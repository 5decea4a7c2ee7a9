"""First-layer filters: for a layer that convolves the model's input directly, each channel's
weights drawn as a small RGB image, as the lecture notes show a first layer's filters.

The convolution is found by structure, in one forward pass: the first `Conv2d` the model runs
with 3 input channels and no groups. A selected layer shows it when the layer is that
convolution, a module around it holding nothing but batch norm and activations (the demo's
`conv1`, GoogLeNet's `conv1`), or a batch norm or activation module right after it; a second
forward pass checks what the layer's output is (the convolution alone, then batch norm, then
an activation), so the page can say so, and the weights are multiplied by batch norm's
per-channel scale when it is part of the layer (the image is then the linear filter the
layer applies, up to its bias).

Scaling, symmetric around zero so grey is a zero weight: pixel = w / max|w| * 127.5 + 127.5,
rounded. The unit page uses the filter's own max|w|; the layer page's grid uses one max|w|
over the whole layer, so filters' strengths compare. Upsampled by a whole factor with nearest
neighbour (no interpolation invents weights). One task per model: one forward pass, tiny PNGs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from atlasgen import images
from atlasgen.plan import make_task
from atlasgen.sitedata import StageImage
from atlasgen.stages import Stage, register

if TYPE_CHECKING:
    from torch import nn


def filter_pixels(weights: np.ndarray, scale: float, factor: int) -> np.ndarray:
    """uint8 (kh * factor, kw * factor, 3) image of one filter's (3, kh, kw) weights:
    w / scale * 127.5 + 127.5, rounded; grey everywhere when the scale is 0."""
    values = np.full(weights.shape, 127.5) if scale <= 0 else weights / scale * 127.5 + 127.5
    pixels = np.clip(np.rint(values), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1)


def upsampling(kernel: tuple[int, int], pixels: int) -> int:
    """The whole factor that makes the filter's longer side at least `pixels`."""
    return max(1, math.ceil(pixels / max(kernel)))


def _first_conv(model: nn.Module, x) -> str | None:
    """The name of the first Conv2d the forward pass runs on 3 channels, ungrouped."""
    from torch import nn

    from atlasgen.hooks import hooked

    convs = [name for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.in_channels == 3 and m.groups == 1 and name]
    ran: list[str] = []
    with hooked(model, convs, lambda name, _output: ran.append(name)):
        model(x)
    return ran[0] if ran else None


def _is_post(module: nn.Module) -> bool:
    """Batch norm, an activation, or nothing at all: what may follow the first conv in its layer."""
    from torch import nn

    return isinstance(module, (nn.BatchNorm2d, nn.Identity, nn.Dropout)) or type(module).__module__ == "torch.nn.modules.activation"


def _layer_parts(model: nn.Module, layer: str, conv: str) -> tuple[list, list] | None:
    """(batch norms, activations) that may make up `layer` after `conv`; None when the layer is
    not the convolution, a wrapper of it or a module right after it."""
    from torch import nn

    modules = dict(model.named_modules())
    module = modules[layer]
    if layer == conv:
        return [], []
    if conv.startswith(layer + "."):
        rest = [m for name, m in module.named_modules() if name and name != conv[len(layer) + 1:] and not list(m.children())]
        if not all(_is_post(m) for m in rest):
            return None
        return [m for m in rest if isinstance(m, nn.BatchNorm2d)], [m for m in rest if not isinstance(m, nn.BatchNorm2d)]
    if list(module.children()) or not _is_post(module):
        return None
    # a module of its own after the conv (ResNet's bn1, VGG's ReLU): the first batch norm of the
    # conv's width registered after it may stand between them
    names = list(modules)
    after = [m for m in (modules[n] for n in names[names.index(conv) + 1:])
             if isinstance(m, nn.BatchNorm2d) and m.num_features == modules[conv].out_channels][:1]
    return (after, []) if isinstance(module, nn.BatchNorm2d) else (after, [module])


def _describe(conv_out, output, norms: list, activations: list):
    """(words for what the layer's output is, the batch norm it includes or None), by trying
    the conv's output through each combination; None when none gives the layer's output."""
    import torch

    def close(a, b) -> bool:
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)

    # The layer's own modules are tried first (batch norm that is an identity at initialization
    # still belongs to the layer), then no activation, then a functional ReLU (GoogLeNet's BasicConv2d).
    for bn in [*norms, None]:
        after_bn = conv_out if bn is None else bn(conv_out)
        bn_words = "" if bn is None else ", then batch norm"
        tries = [(f", then {type(a).__name__}", a) for a in activations] + [("", None), (", then ReLU", torch.relu)]
        for words, act in tries:
            if close(after_bn if act is None else act(after_bn.clone()), output):
                return f"the convolution{bn_words}{words}", bn
    return None


def first_layer_filters(model: nn.Module, layers: list[str], input_size: int) -> dict[str, dict]:
    """layer -> {"conv", "applies", "weights" (C, 3, kh, kw) float32, "folded"} for each of
    `layers` that convolves the input directly (see the module's doc)."""
    import torch

    from atlasgen.hooks import eval_mode, hooked

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, input_size, input_size, generator=generator)
    weights = next(model.parameters(), None)
    if weights is None:  # nothing to show, and nowhere to run
        return {}
    device = weights.device
    with eval_mode(model), torch.inference_mode():
        x = x.to(device)
        conv = _first_conv(model, x)
        if conv is None:
            return {}
        parts = {layer: _layer_parts(model, layer, conv) for layer in layers}
        parts = {layer: p for layer, p in parts.items() if p is not None}
        if not parts:
            return {}
        outputs: dict = {}

        def keep(name: str, out) -> None:  # a copy: an in-place ReLU after the module would change its output
            outputs.setdefault(name, out.clone())  # (and returning it would replace the module's output)

        with hooked(model, list(dict.fromkeys([conv, *parts])), keep):
            model(x)
        module = dict(model.named_modules())[conv]
        found = {}
        for layer, (norms, activations) in parts.items():
            described = _describe(outputs[conv], outputs[layer], norms, activations)
            if described is None:
                continue
            applies, bn = described
            weights = module.weight.detach().float()
            if bn is not None and bn.running_var is not None:
                gamma = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(bn.running_var)
                weights = weights * (gamma / torch.sqrt(bn.running_var.float() + bn.eps))[:, None, None, None]
            found[layer] = {"conv": conv, "applies": applies, "folded": bn is not None,
                            "weights": weights.cpu().numpy().astype(np.float32)}
    return found


class Filters(Stage):
    name = "filters"
    version = 1
    order = 12
    title = "first-layer filters"
    unit_section = "partials/filters.html"
    layer_section = "partials/filters_layer.html"

    def tasks(self, basis):
        settings = basis.config.stages.filters
        if not settings.show:
            return []
        inputs = {"arch": basis.config.arch, "weights": basis.weights_digest, "input_size": basis.preprocess.input_size,
                  "layers": [layer.name for layer in basis.layers], "pixels": settings.pixels}
        return [make_task(self.name, self.version, basis.config.name, "", None, inputs)]

    def compute(self, run, plan, tasks):
        pixels = plan.config.stages.filters.pixels
        for task in tasks:
            found = first_layer_filters(plan.loaded.module, [layer.name for layer in plan.layers], plan.input_size)
            files, arrays, meta = {}, {}, {}
            for i, (layer, info) in enumerate(found.items()):
                weights = info.pop("weights")
                factor = upsampling(weights.shape[2:], pixels)
                shared = float(np.abs(weights).max())
                for c, w in enumerate(weights):
                    files[f"{i}/{c}.png"] = images.encode(filter_pixels(w, float(np.abs(w).max()), factor), "png")
                    files[f"{i}/{c}-shared.png"] = images.encode(filter_pixels(w, shared, factor), "png")
                arrays[f"weights_{i}"] = weights
                meta[layer] = {**info, "index": i, "factor": factor, "kernel": list(weights.shape[2:]), "shared_max": shared}
            run.store(task, files, arrays, meta={"layers": meta})

    def contribute(self, layer):
        entry = layer.model_entry(self.name)
        info = entry.meta["layers"].get(layer.info.name) if entry is not None else None
        if info is None:
            return
        i = info["index"]
        weights = entry.arrays()[f"weights_{i}"]
        layer.data.extras[self.name] = info
        where = f"{layer.model.config.name} {layer.info.name}"
        for unit in layer.units:
            c = unit.channel
            unit.extras[self.name] = {**info, "max": float(np.abs(weights[c]).max())}
            unit.stage_images["filter.png"] = StageImage(entry.file(f"{i}/{c}.png"), f"Weights of {where} channel {c} as an RGB image")
            layer.data.stage_images[f"filter-{c}.png"] = StageImage(
                entry.file(f"{i}/{c}-shared.png"), f"Channel {c}'s weights")


register(Filters())
