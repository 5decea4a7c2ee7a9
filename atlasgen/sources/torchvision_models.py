"""torchvision classification models by name (`arch = "googlenet"`), with torchvision's
weights names (`weights = "DEFAULT"`) or a weights file."""

from __future__ import annotations

import difflib
import os
import urllib.error

from atlasgen.errors import AtlasError
from atlasgen.sources import Built, Source, register


def _check(config) -> list[tuple[str, str]]:
    import torchvision

    names = set(torchvision.models.list_models())
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
    # Auxiliary heads only matter in training; without them a plain state_dict of the main network loads.
    kwargs = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
    return Built(torchvision.models.get_model(arch, weights=None, **kwargs), None, "", "random initialization")


register(Source(
    name="torchvision",
    order=1000,  # whatever no other source claims is a torchvision name
    claims=lambda arch: True,
    build=_build,
    check=_check,
    weights_names=True,
))
