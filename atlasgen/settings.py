"""Typed settings of each compute stage, as validated from atlas.toml by `atlasgen.config`.

Frozen dataclasses so they can be hashed into content keys (`dataclasses.asdict`)."""

from __future__ import annotations

from dataclasses import dataclass, field

OBJECTIVES = ("channel", "negative", "neuron", "diversity")


@dataclass(frozen=True)
class Octave:
    """One octave of the optimization schedule."""

    scale: float  # image side as a fraction of VisSettings.size
    share: float  # fraction of VisSettings.steps spent in this octave
    lr: tuple[float, float]  # learning rate at the start and end of the octave (linear decay)
    blur: tuple[float, float]  # Gaussian blur sigma in pixels at the start and end (linear decay; 0 = none)


# Measured with benchmarks/featvis_vs_lucent.py (GoogLeNet, 64 steps, 128 px): learning rates 8x
# Lucid's 0.05 reach the highest activation per second at this step budget; half the steps at
# half size cost a quarter each.
DEFAULT_OCTAVES = (
    Octave(scale=0.5, share=0.5, lr=(0.4, 0.4), blur=(1.0, 0.5)),
    Octave(scale=0.75, share=0.25, lr=(0.4, 0.24), blur=(0.75, 0.25)),
    Octave(scale=1.0, share=0.25, lr=(0.24, 0.16), blur=(0.5, 0.0)),
)


@dataclass(frozen=True)
class VisSettings:
    objectives: tuple[str, ...] = ("channel", "negative", "neuron", "diversity")
    diversity: int = 4  # images of the diversity objective per channel
    diversity_weight: float = 1.0
    size: int = 128  # final image side fed to the network, pixels
    steps: int = 256  # total optimization steps over all octaves
    octaves: tuple[Octave, ...] = DEFAULT_OCTAVES
    pad: int = 12
    jitter: int = 8
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    decorrelate: bool = True
    fft: bool = True
    relu_redirect_steps: int = 16  # steps at the start with Lucid-style redirected ReLU gradients
    seed: int = 0
    batch_size: int = 0  # images per optimization batch; 0 = automatic (free memory on GPU, 32 on CPU)


@dataclass(frozen=True)
class ExamplesSettings:
    top_k: int = 10
    bottom_k: int = 10
    patch_size: int = 96  # side of the stored patch images, pixels
    batch_size: int = 64
    workers: int = -1  # DataLoader workers; -1 = automatic
    max_images: int = 0  # 0 = every image of the dataset


@dataclass(frozen=True)
class SimilaritySettings:
    top_n: int = 8


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: resize the shorter side to `input_size`,
    centre-crop a square of `input_size`, scale to [0, 1], normalize per channel."""

    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageSettings:
    format: str = "webp"  # "webp", "jpeg" or "png" for dataset patches; visualizations are always PNG
    quality: int = 85


@dataclass(frozen=True)
class StageSettings:
    visualize: VisSettings = field(default_factory=VisSettings)
    examples: ExamplesSettings = field(default_factory=ExamplesSettings)
    similarity: SimilaritySettings = field(default_factory=SimilaritySettings)
