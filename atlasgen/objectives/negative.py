"""negative: minimize the channel's spatial mean, showing what the channel responds against."""

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import channel_mean_score, own_channel_mean

register(Objective(
    name="negative",
    label="Negative channel objective",
    order=20,
    loss=lambda acts, rows, channels, _settings: -own_channel_mean(acts, rows, channels),
    score=channel_mean_score,
))
