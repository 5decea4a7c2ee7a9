"""negative: minimize the channel's spatial mean, showing what the channel responds against.

Its learning rate ends at a quarter of the shared end (`lr_end`): a channel's lowest value is
often a floor where nothing before it fires, and any noise the last steps leave lights up a unit
below it (benchmarks/fidelity.py, the small model's conv3 channel 0 at 64 px: -0.95 against the
dataset's lowest -1.00 at the shared end, -1.035 at a quarter; the other negative images of
conv2-conv4 end 8-17% less deep, medians per layer of both models, still far below the dataset's
lowest, and look the same). The other objectives keep the shared end: at a quarter, their images
of conv2-conv4 ended 4-27% lower."""

from atlasgen.objectives import Objective, register
from atlasgen.objectives._common import channel_mean_score, own_channel_mean

register(Objective(
    name="negative",
    label="Negative channel objective",
    order=20,
    loss=lambda acts, rows, channels, _settings: -own_channel_mean(acts, rows, channels),
    score=channel_mean_score,
    lr_end=0.25,
))
