"""feature-maps-article: the recipe of the article "Feature Visualization I: Feature Maps"
(B. Badger, https://blbadger.github.io/feature-visualization.html), as a named preset beside
atlasgen's own optimization.

The recipe: plain gradient descent on the image's pixels (no Fourier parameterization, no
colour decorrelation, no random transforms) of a distance between the target activations z and
a large constant C, over three octaves of 100 steps; between octaves the image is resized up
(299 -> 340 -> 380 px for InceptionV3, whose input is 299 px: other models scale by the same
factors of their own input size), the learning rate decays 0.4 -> 0.3, 0.3 -> 0.2, 0.2 -> 0.1
and a 3x3 Gaussian blur, applied after every step, decays from sigma 2.4 -> 0.8, 1.5 -> 0.4,
1.1 -> 0.3 within each octave. The distances the article compares:

    l1    sum(C - z)
    l2    sqrt(sum((C - z)^2))
    linf  max |C - z|          (its gradient reaches only the unit farthest from C)

The preset is an objective with options: every number above is declared once, as the default
of a `[visualize.feature-maps-article]` key, and a key written there overrides it. Listing the
objective (`objectives = [..., "feature-maps-article"]`) adds its image to every unit as one
more row, next to atlasgen's own; it is optimized by its own loop (`atlasgen.featvis.article`)
and cached by its own stage (`atlasgen.stages.article`), so turning it on or changing its
numbers leaves the other images' cache entries as they are. The experiments (neuron maps,
combined units, metric invariance) optimize with the same recipe.

Not the article's: the step is each image's gradient scaled to unit RMS over the pixels it
reaches, times the learning rate, times `step_unit` (models' raw gradients differ by orders of
magnitude, so the article's learning rates cannot be used on the raw gradient of any model but
its own), the image starts as grey with +-5% uniform noise, and C defaults to 200."""

from __future__ import annotations

from dataclasses import dataclass

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import channel_mean_score
from atlasgen.parsers import Parser, choice, integer, list_of, number, pair, required, setting, table_of

NAME = "feature-maps-article"
METRICS = ("l1", "l2", "linf")


@dataclass(frozen=True)
class RecipeOctave:
    """One octave of the article's recipe."""

    scale: float = required(number(0.05, 8.0), "image side as a multiple of the model's input size (InceptionV3: 299 px)")
    steps: int = required(integer(0, 100_000), "gradient-descent steps in this octave")
    lr: tuple[float, float] = required(pair(number(0.0)), "learning rate at the start and end of the octave (linear decay)")
    blur: tuple[float, float] = required(
        pair(number(0.0)), "Gaussian blur sigma in pixels at the start and end of the octave (linear decay; 0 = none)")


# 340 / 299 and 380 / 299 to three places: round(299 * scale) gives the article's 340 and 380 px.
ARTICLE_OCTAVES = (
    RecipeOctave(scale=1.0, steps=100, lr=(0.4, 0.3), blur=(2.4, 0.8)),
    RecipeOctave(scale=1.137, steps=100, lr=(0.3, 0.2), blur=(1.5, 0.4)),
    RecipeOctave(scale=1.271, steps=100, lr=(0.2, 0.1), blur=(1.1, 0.3)),
)


def _odd(value, path, problems):
    parsed = integer(1, 15)(value, path, problems)
    if parsed is not None and parsed % 2 == 0:
        problems.add(path, f"the blur kernel's side must be odd (1, 3, 5, ...), got {parsed}")
        return None
    return parsed


@dataclass(frozen=True)
class Recipe:
    """The feature-maps article's recipe (objective `feature-maps-article`, and the experiments):
    every default is the article's number for InceptionV3; a key written here overrides it."""

    metric: str = setting("l1", choice(*METRICS), "distance between the target activations and C: l1 = sum(C - z), "
                          "l2 = sqrt(sum((C - z)^2)), linf = max |C - z|")
    constant: float = setting(200.0, number(), "C, the large constant the activations are pulled towards")
    octaves: tuple[RecipeOctave, ...] = setting(
        ARTICLE_OCTAVES, list_of(table_of(RecipeOctave, "an octave"), nonempty=True),
        "the schedule; the image is resized to each octave's side before its steps")
    blur_kernel: int = setting(3, Parser(_odd, "integer", "odd, 1 to 15"),
                               "side of the Gaussian blur kernel, pixels (1 = no blur)")
    step_unit: float = setting(
        0.2, number(0.0), "a step moves the pixels (in [0, 1]) by lr x step_unit x the gradient scaled to unit RMS over the pixels it reaches")
    seed: int = setting(0, integer(0), "random seed of the initial noise")


def distance(z, metric: str, constant: float):
    """(n,) the recipe's loss of each row of target activations z (n, k): what descent lowers."""
    gap = constant - z
    if metric == "l1":
        return gap.sum(dim=1)
    if metric == "l2":
        return gap.pow(2).sum(dim=1).sqrt()
    return gap.abs().amax(dim=1)


def _negated_distance(acts, rows, channels, settings):
    """As an ordinary objective (the value to maximize): the negated distance of the channel's units."""
    recipe = settings.options_for(NAME)
    return -distance(acts[rows, channels].flatten(1), recipe.metric, recipe.constant)


register(Objective(
    name=NAME,
    label="Feature-maps article recipe",
    order=50,
    loss=_negated_distance,
    score=channel_mean_score,
    options=Recipe,
    own_loop=True,
))
