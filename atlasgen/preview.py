"""`[build] preview = true`: every unit of the atlas, cheaply, to check the site's shape (layers,
pages, notes, links, sizes) before the real run; every page says it is a preview.

The preview caps the settings that cost time and leaves every other one as configured, so the
site has the same models, layers, channels, objectives and sections as the real one. It changes
the stage settings themselves, so cache keys (made from the effective settings) keep preview
and real results apart, and the atlas version differs too. A setting already below its cap is
kept.

Feature visualization dominates a build and its cost grows with the steps and, less on a CPU,
with the image side: 16 steps instead of 256 (8 and 8 over the default octaves, so every
octave and the fading transforms still run) at 64 px instead of 128 measured 22x faster per
channel on GoogLeNet's inception4a on a 2-core CPU (37 against 26.5 image-steps per second at
the same step count, README "Preview"; measured with the earlier three-octave schedule). The
redirected-ReLU warm-up is capped at 2 steps per octave, so most of them follow the true
gradient. 64 dataset images are one forward batch at the default batch size and still more than
the default 10 top and 10 bottom examples per channel."""

from __future__ import annotations

import dataclasses

from atlasgen.settings import StageSettings

STEPS = 16
SIZE = 64
RELU_REDIRECT_STEPS = 2  # per octave: a quarter of each of the default two octaves' 8 steps
MAX_IMAGES = 64


def preview_stages(stages: StageSettings) -> StageSettings:
    """`stages` with the costly settings capped at the preview's."""
    vis, examples = stages.visualize, stages.examples
    visualize = dataclasses.replace(vis, steps=min(vis.steps, STEPS), size=min(vis.size, SIZE),
                                    relu_redirect_steps=min(vis.relu_redirect_steps, RELU_REDIRECT_STEPS),
                                    options=_capped_recipe(vis))
    images = MAX_IMAGES if examples.max_images == 0 else min(examples.max_images, MAX_IMAGES)
    return dataclasses.replace(stages, visualize=visualize, examples=dataclasses.replace(examples, max_images=images))


def _capped_recipe(vis):
    """The options with the feature-maps article's recipe (its image of every unit, and the
    experiments) capped at STEPS steps over its octaves, each octave still run."""
    from atlasgen.objectives.article import NAME

    recipe = vis.options_for(NAME)
    per_octave = max(1, STEPS // len(recipe.octaves))
    octaves = tuple(dataclasses.replace(o, steps=min(o.steps, per_octave)) for o in recipe.octaves)
    options = dict(vis.options)
    options[NAME] = dataclasses.replace(recipe, octaves=octaves)
    return tuple(sorted(options.items()))
