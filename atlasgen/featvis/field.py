"""How much blur a unit's visualization can take, from the size of what the unit sees.

The per-step blur keeps pixel-level noise out of the images of units that see large regions:
for them such noise is an adversarial pattern, not a feature. A unit that sees a few pixels (a
first convolution's 3x3 window) has nothing else to show: its optimum is a pixel-level pattern,
which the blur keeps it from reaching (measured on the demo model's conv1 at 32 px: neuron images
from 0.47 to 0.91 of the exact optimum at worst, channel images from 0.47 to 0.61, without blur).
So the blur fades in with the field's side, from none at `NO_BLUR_FIELD` pixels to the
configured blur at `FULL_BLUR_FIELD` pixels and beyond.

For the same reason such a unit's last octave runs without the random views: they keep
adversarial patterns out of the images of units that see regions, but a unit that sees a few
pixels has no pattern beyond its pixels to find, and its optimum depends on where each pixel is
(a first layer's spatial mean peaks with a one-pixel frame along the zero-padded border, which
random views keep moving). Measured on the demo's conv1 at 64 px: channel images from 0.66-0.98
of the exact optimum to 0.92-1.00, neuron images from 0.98-1.00 to 1.00. And that octave optimizes
the RGB pixels themselves, not a 1/f spectrum in decorrelated colours: the optimum of such a unit
sets each colour of each pixel to 0 or 1 by the sign of its own gradient (a one-pixel line of
another colour along one border, for an edge filter's mean), which the spectrum's prior against
fine detail slows and the colour mixing couples. Demo conv1 channel images at 128 px: 0.86-1.00
of the exact optimum with the spectrum, 1.00 with pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from atlasgen.hooks import forward_layers
from atlasgen.receptive import support_box

NO_BLUR_FIELD = 4
FULL_BLUR_FIELD = 16


def field_side(model: nn.Module, layer: str, probe: torch.Tensor) -> int:
    """Side in input pixels of the region that the centre unit of `layer` (all its channels)
    reads on `probe`, from one gradient; the whole input when nothing reaches it."""
    x = probe[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        acts = forward_layers(model, x, [layer])[layer]
        h, w = acts.shape[-2:]
        (grad,) = torch.autograd.grad(acts[0, :, h // 2, w // 2].sum(), x, allow_unused=True)
    if grad is None:
        return max(probe.shape[-2:])
    top, left, bottom, right = support_box(grad[0].abs().sum(dim=0) > 0)
    return max(bottom - top, right - left) or max(probe.shape[-2:])


def blur_scale(side: int) -> float:
    """Share of the configured blur used for a unit that sees `side` x `side` pixels."""
    return min(max((side - NO_BLUR_FIELD) / (FULL_BLUR_FIELD - NO_BLUR_FIELD), 0.0), 1.0)


def pixel_scale(side: int) -> bool:
    """Whether a unit that sees `side` x `side` pixels has a pixel pattern as its optimum (no
    blur, and a last octave of RGB pixels without random views)."""
    return side <= NO_BLUR_FIELD
