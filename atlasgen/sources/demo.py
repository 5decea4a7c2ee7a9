"""The built-in demo CNN (`arch = "demo"`), with its shipped weights and preprocessing."""

from __future__ import annotations

from pathlib import Path

from atlasgen.sources import Built, Source, register

DEMO = "demo"


def _weights_file() -> Path:
    return Path(__file__).resolve().parent.parent / "demo" / "weights.pt"


def _build(config) -> Built:
    from atlasgen.demo import DEMO_INPUT_SIZE, DEMO_MEAN, DEMO_STD, build_demo_model
    from atlasgen.digest import file_digest
    from atlasgen.settings import Preprocess

    module = build_demo_model(pretrained=config.weights is None)
    digest = file_digest(_weights_file()) if config.weights is None else ""
    return Built(module, Preprocess(DEMO_INPUT_SIZE, tuple(DEMO_MEAN), tuple(DEMO_STD)), digest, "shipped demo weights")


register(Source(
    name="demo",
    order=10,
    claims=lambda arch: arch == DEMO,
    build=_build,
    key_files=lambda config: [str(_weights_file())],
))
