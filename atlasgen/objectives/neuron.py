"""neuron: maximize the single unit at the centre of the channel's map (lucent's convention,
(h // 2, w // 2)), which shows the feature at its receptive field's scale.

It follows the random view: during optimization it reads the unit nearest to the place where the
image's centre went, so jitter, zoom and rotation move the unit with the
content instead of moving the content out of the unit's field."""

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import unit_value


def centre_unit(acts, rows, channels, _settings=None):
    h, w = acts.shape[-2:]
    return unit_value(acts, rows, channels, h // 2, w // 2)


register(Objective(
    name="neuron",
    label="Neuron objective (centre unit)",
    order=30,
    loss=centre_unit,
    score=centre_unit,
    follows_view=True,
))
