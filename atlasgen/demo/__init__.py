"""The built-in demo: a generated image dataset and a compact CNN with shipped weights,
so `atlasgen build` shows a real atlas with no download."""

from atlasgen.demo.data import CLASSES, generate_arrays, generate_image, write_demo_dataset
from atlasgen.demo.net import DEMO_INPUT_SIZE, DEMO_MEAN, DEMO_STD, WEIGHTS_PATH, DemoNet, build_demo_model

__all__ = [
    "CLASSES",
    "DEMO_INPUT_SIZE",
    "DEMO_MEAN",
    "DEMO_STD",
    "WEIGHTS_PATH",
    "DemoNet",
    "build_demo_model",
    "generate_arrays",
    "generate_image",
    "write_demo_dataset",
]
