"""channel: maximize the channel's spatial mean (Olah et al.'s "channel" objective)."""

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import channel_mean_score, own_channel_mean

register(Objective(
    name="channel",
    label="Channel objective",
    order=10,
    loss=lambda acts, rows, channels, _settings: own_channel_mean(acts, rows, channels),
    score=channel_mean_score,
))
