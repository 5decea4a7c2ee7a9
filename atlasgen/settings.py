"""Typed settings of each compute stage, as validated from atlas.toml by `atlasgen.config`.

Frozen dataclasses so they can be hashed into content keys (`dataclasses.asdict`): field
names, types, defaults and order are part of every cache key. Each stage key of atlas.toml
is declared once, as its field here (`setting(default, parser, doc)` from atlasgen.parsers);
config.py parses the tables and writes docs/settings.md from these declarations (field
metadata is not part of `asdict`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atlasgen.parsers import (
    boolean, channel_range, choice, choice_from, fraction_of_side, integer, list_of, nonempty_string, number, pair, required,
    section, setting, subtables, table_of,
)


def _objective_names() -> tuple[str, ...]:
    # Imported when asked: objective modules may import this module.
    from atlasgen import objectives

    return objectives.names()


def _objective_options() -> dict[str, type]:
    from atlasgen import objectives

    return {o.name: o.options for o in objectives.all_objectives() if o.options is not None}


@dataclass(frozen=True)
class Octave:
    """One octave of the optimization schedule."""

    scale: float = required(number(0.05, 1.0), "image side as a fraction of `size`")
    share: float = required(number(0.0, 1.0), "fraction of `steps` spent in this octave")
    lr: tuple[float, float] = required(pair(number(0.0)), "learning rate at the start and end of the octave (linear decay)")
    blur: tuple[float, float] = required(
        pair(number(0.0)), "Gaussian blur sigma in pixels at the start and end (linear decay; 0 = none)"
    )


# Measured with benchmarks/featvis_vs_lucent.py (GoogLeNet, 64 steps, 128 px): learning rates 8x
# Lucid's 0.05 reach the highest activation per second at this step budget; half the steps at
# half size cost a quarter each. Half the steps at full size (benchmarks/fidelity.py): with a
# quarter there (and a 0.75 octave between), three units of a rougher network at 128 px stopped
# just short of their dataset's best, and most other images now reach 1.04-1.4x more; it costs about a
# fifth more compute per image. Blur: half of what it was before the clamp squash (param.py):
# the full blur kept fine features from units that have them (a channel whose lowest dataset
# image is 5 px stripes stopped at a quarter of that image's value). Lucid uses no blur at all.
DEFAULT_OCTAVES = (
    Octave(scale=0.5, share=0.5, lr=(0.4, 0.4), blur=(0.5, 0.25)),
    Octave(scale=1.0, share=0.5, lr=(0.24, 0.16), blur=(0.25, 0.0)),
)


@dataclass(frozen=True)
class VisSettings:
    """Feature visualization: images optimized to drive each channel."""

    objectives: tuple[str, ...] = setting(
        ("channel", "negative", "neuron", "diversity"),
        list_of(choice_from(_objective_names), nonempty=True, unique=True),
        "objectives rendered for every channel (repeats are dropped)",
    )
    diversity: int = setting(4, integer(1, 64), "images of the diversity objective per channel")
    diversity_weight: float = setting(1.0, number(0.0), "weight of the diversity objective's similarity penalty; 0 = none")
    size: int = setting(128, integer(16, 4096), "final image side fed to the network, pixels")
    steps: int = setting(256, integer(1, 100_000), "total optimization steps over all octaves")
    octaves: tuple[Octave, ...] = setting(
        DEFAULT_OCTAVES, list_of(table_of(Octave, "an octave"), nonempty=True),
        "the optimization schedule; shares add up to 1 and the last octave has scale = 1.0",
    )
    pad: float = setting(
        0.094, fraction_of_side(0.0, 0.5),
        "grey border added around the image before the random transforms, as a fraction of the image side "
        "(Lucid's 12 px at 128 px)",
    )
    jitter: float = setting(
        0.0625, fraction_of_side(0.0, 0.5),
        "random shift of up to half this fraction of the image side each way (Lucid's 8 px at 128 px)",
    )
    scale: tuple[float, float] = setting((0.9, 1.1), pair(number(0.1, 10.0)), "random zoom factor range [low, high]")
    rotate: float = setting(10.0, number(0.0, 180.0), "random rotation, degrees, uniform in [-rotate, rotate]")
    decorrelate: bool = setting(True, boolean, "optimize in a colour-decorrelated space")
    fft: bool = setting(True, boolean, "optimize the image's Fourier coefficients instead of its pixels")
    relu_redirect_steps: int = setting(
        16, integer(0), "steps at the start of each octave with Lucid-style redirected ReLU gradients (they differ "
        "from the plain ones only where a ReLU passes no gradient to an image)"
    )
    seed: int = setting(0, integer(0), "random seed of the initial images and transforms")
    batch_size: int = setting(
        0, integer(0), "images per optimization batch; 0 = automatic (free memory on GPU, 32 on CPU)"
    )
    # Only objectives whose [visualize.<name>] table is given (here or inherited from the
    # top-level table) have an entry, so configurations that set no options hash as before;
    # `options_for` supplies the defaults of the others.
    options: tuple[tuple[str, Any], ...] = subtables(
        _objective_options, "per-objective options, from the [visualize.<objective>] sub-tables"
    )

    def options_for(self, name: str) -> Any:
        """Objective `name`'s options: as given, else its defaults; None if it declares none."""
        from atlasgen import objectives

        kind = objectives.get(name).options
        if kind is None:
            return None
        given = dict(self.options)
        return given[name] if name in given else kind()


@dataclass(frozen=True)
class ExamplesSettings:
    """Dataset examples: one pass over the dataset keeps each channel's extreme images."""

    top_k: int = setting(10, integer(1, 1000), "most activating dataset patches kept per channel")
    bottom_k: int = setting(10, integer(0, 1000), "least activating dataset patches kept per channel")
    patch_size: int = setting(96, integer(8, 1024), "side of the stored patch images, pixels")
    batch_size: int = setting(64, integer(1), "images per forward pass")
    workers: int = setting(-1, integer(-1), "DataLoader workers; -1 = automatic")
    max_images: int = setting(0, integer(0), "images read from the dataset; 0 = every image")


@dataclass(frozen=True)
class SimilaritySettings:
    """Similar channels, by the correlation of their activations over the dataset."""

    top_n: int = setting(8, integer(0, 1000), "similar and cross-activated channels listed per channel")


@dataclass(frozen=True)
class FiltersSettings:
    """First-layer filters: the weights of a layer that convolves the input directly, as images."""

    show: bool = setting(True, boolean, "show the filters of a layer that convolves the input directly (one forward pass)")
    pixels: int = setting(
        48, integer(8, 512), "smallest side of a filter image; the weights are upsampled by a whole factor, nearest neighbour"
    )


_LAYER_GLOBS = list_of(nonempty_string)
_UNIT_CHANNELS = "channels of those layers; not set = every channel the atlas shows"


@dataclass(frozen=True)
class ActivationMapsSettings:
    """Activation maps: a channel's whole map over each of its top dataset images, overlaid on the image."""

    layers: tuple[str, ...] = setting((), _LAYER_GLOBS, "glob patterns over the atlas's layers that get maps; empty = none")
    channels: tuple[int, int] | None = setting(None, channel_range, _UNIT_CHANNELS)
    top_k: int = setting(3, integer(1, 1000), "top dataset examples per channel with a map (at most examples.top_k)")


@dataclass(frozen=True)
class OcclusionSettings:
    """Occlusion: how much a unit's activation drops when a square of its top patch is greyed out."""

    layers: tuple[str, ...] = setting((), _LAYER_GLOBS, "glob patterns over the atlas's layers that get occlusion maps; empty = none")
    channels: tuple[int, int] | None = setting(None, channel_range, _UNIT_CHANNELS)
    top_k: int = setting(3, integer(1, 1000), "top dataset examples per channel with an occlusion map (at most examples.top_k)")
    square: float = setting(0.25, number(0.02, 1.0), "side of the grey square, as a fraction of the patch side")
    stride: float = setting(0.125, number(0.01, 1.0), "step of the square, as a fraction of the patch side")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: resize the shorter side to `input_size`,
    centre-crop a square of `input_size`, scale to [0, 1], normalize per channel."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageSettings:
    """Image files of the site."""

    format: str = setting(
        "webp", choice("webp", "jpeg", "png"), "format of dataset patches (visualizations: `visualizations`)"
    )
    quality: int = setting(85, integer(1, 100), "WebP and JPEG quality")
    visualizations: str = setting(
        "png", choice("png", "jpeg"), "format of feature visualizations on the site: png, lossless, the pixels their "
        "values were measured on; or jpeg at `quality` with full colour resolution, about a third of the bytes (values "
        "stay the lossless images'); switching only re-encodes, the optimization is not redone"
    )

    def patch_inputs(self) -> dict:
        """What dataset patches are encoded with: the key inputs of the stages that write them."""
        return {"format": self.format, "quality": self.quality}


@dataclass(frozen=True)
class StageSettings:
    """The stage tables, at the top level (every model) and per model (`[models.visualize]`)."""

    visualize: VisSettings = section(VisSettings, "feature visualization")
    examples: ExamplesSettings = section(ExamplesSettings, "dataset examples")
    similarity: SimilaritySettings = section(SimilaritySettings, "similar channels")
    filters: FiltersSettings = section(FiltersSettings, "first-layer filters as images")
    activation_maps: ActivationMapsSettings = section(ActivationMapsSettings, "whole activation maps of top examples")
    occlusion: OcclusionSettings = section(OcclusionSettings, "occlusion maps of top examples")
