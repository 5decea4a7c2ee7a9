"""torchvision classification models by name (`arch = "googlenet"`), with torchvision's
weights names (`weights = "DEFAULT"`) or a weights file."""

from __future__ import annotations

import difflib
import os
import urllib.error

from atlasgen.errors import AtlasError
from atlasgen.sources import Built, Source, register, seeded_construction


# torchvision's other model families, each with the sentence that says what to do instead.
_OTHER_TASKS = {
    "segmentation": "its backbone is an image network: return it from a factory, for example "
                    "`def backbone(): return torchvision.models.segmentation.{arch}(weights=None, weights_backbone=None).backbone` "
                    'in nets.py, and set arch = "nets.py:backbone" (backbone outputs are dicts: name its inner layers in `layers`)',
    "detection": "its backbone is an image network: return it from a factory, for example "
                 "`def backbone(): return torchvision.models.detection.{arch}(weights=None, weights_backbone=None).backbone.body` "
                 'in nets.py, and set arch = "nets.py:backbone"',
    "video": "it reads clips (batch, channels, time, height, width), and atlasgen visualizes models of single images",
    "optical_flow": "it reads pairs of frames, and atlasgen visualizes models of single images",
    "quantization": "quantized models run integer kernels that have no gradients to optimize images with; "
                    "use its float twin {float_arch!r} with the same weights",
}


def _other_task(arch: str) -> str | None:
    import torchvision

    for task, advice in _OTHER_TASKS.items():
        if arch in torchvision.models.list_models(module=getattr(torchvision.models, task)):
            float_arch = arch.removeprefix("quantized_")
            return (f"{arch!r} is a torchvision {task.replace('_', ' ')} model, not an image classifier; "
                    + advice.format(arch=arch, float_arch=float_arch))
    return None


def _check(config) -> list[tuple[str, str]]:
    import torchvision

    names = set(torchvision.models.list_models(module=torchvision.models))
    other = _other_task(config.arch)
    if other:
        return [(f"{config.path}.arch", other)]
    if config.arch not in names:
        close = difflib.get_close_matches(config.arch, sorted(names), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return [(f"{config.path}.arch", f"no torchvision model named {config.arch!r}{hint} (or use \"demo\", or \"file.py:function\" for your own model)")]
    if config.weights is not None and not os.path.isfile(config.weights):
        enum = torchvision.models.get_model_weights(config.arch)
        known = list(dict.fromkeys(["DEFAULT", *enum.__members__]))
        if config.weights not in known:
            return [(f"{config.path}.weights", f"{config.arch} has no weights named {config.weights!r}; known: {', '.join(known)}")]
    return []


def _build(config) -> Built:
    import torchvision

    from atlasgen.settings import Preprocess

    arch, weights = config.arch, config.weights
    if weights is not None and not os.path.isfile(weights):
        enum = torchvision.models.get_model_weights(arch)
        chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
        try:
            module = torchvision.models.get_model(arch, weights=chosen)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise AtlasError(
                f"{config.path}.weights: could not download {arch} weights {chosen} ({exc}). "
                "Without network access, download the file elsewhere and set weights = \"path/to/file.pth\""
            ) from exc
        meta = chosen.transforms()
        preprocess = Preprocess(input_size=int(meta.crop_size[0]), mean=tuple(meta.mean), std=tuple(meta.std))
        return Built(module, preprocess, f"torchvision:{arch}:{chosen}:{chosen.url}", "")
    # Auxiliary heads only matter in training: the model is built without them, and a checkpoint
    # that has them loads with them left out (atlasgen.checkpoints).
    kwargs = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
    module = seeded_construction(lambda: torchvision.models.get_model(arch, weights=None, **kwargs))
    return Built(module, None, "", "random initialization")


register(Source(
    name="torchvision",
    order=1000,  # whatever no other source claims is a torchvision name
    claims=lambda arch: True,
    build=_build,
    check=_check,
    weights_names=True,
))
