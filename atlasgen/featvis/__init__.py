"""Feature visualization by optimization, batched over many channels of one layer.

Four ideas, as in Lucid's optvis:

1. **Objectives** (`atlasgen/objectives/`, one module each; `batch.py` combines them): what an
   image should do to the network. *channel*
   maximizes a channel's spatial mean; *negative* minimizes it; *neuron* maximizes only the
   centre unit; *diversity* renders D images of one channel and adds a penalty on the cosine
   similarity of their layer Gram matrices, so they show different facets of the feature.
2. **Parameterization** (`param.py`): the image is not optimized as raw pixels. Parameters are
   a Fourier spectrum scaled by 1/frequency, in a decorrelated colour basis, clamped to [0, 1]
   (a clamp whose gradient still pulls a saturated pixel back, where a sigmoid's vanishes).
   Equal steps then change images like natural images vary, which avoids the high-frequency
   noise that pixel optimization finds. The map is invertible on [0, 1] (affine, inverse colour
   matrix, rfft, divide by the scale), so any image can become parameters again.
3. **Transforms** (`transforms.py`): before each step every image gets its own random pad,
   jitter, zoom and rotation (one affine `grid_sample` for the batch); a feature that survives
   them is robust, not adversarial. Pad and jitter are fractions of the image side, so they do
   the same at every image size and octave; over the last octave the transforms fade to the
   identity view the image is scored on (a unit that sees a few pixels, whose optimum is a
   pixel pattern, gets none over the last octave: `field.py`). Neuron objectives follow each view: they read the
   unit now over the content they optimize, not a fixed cell the content jitters away from.
4. **The octave loop** (`optimize.py`): optimization starts on a small image, then upsamples it
   and re-expresses it as parameters at the next size, with a fresh optimizer, a linearly
   decaying learning rate and a decaying Gaussian blur at each octave; small octaves are cheap
   and fix the coarse layout first. For the first steps of each octave ReLU gradients
   are redirected (`redirect.py`) so channels that start dead, or die when the image is resized,
   still get a gradient.

Many images (channels x objectives) share one batch and one forward pass cut at the target
layer. Each image's initial parameters and random transforms come from its own generator,
seeded by (seed, channel, objective, diversity index), so a result does not depend on which
other images shared its batch.
"""

from atlasgen.featvis.device import pick_device
from atlasgen.featvis.optimize import VisResult, visualize_channels

__all__ = ["VisResult", "pick_device", "visualize_channels"]
