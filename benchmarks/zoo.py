"""Every torchvision classification model through atlasgen, as a new user meets it: built with
its default constructor (random initialization: nothing is downloaded), its weights saved to a
file and loaded back as a checkpoint, default layers found, receptive fields probed, and the
first channel of its first and last layer visualized (2 steps) through the build's own
optimizer with the input fitted to what the model accepts.

Each model runs in its own process with a time limit; the table says ok, or the sentence a
user would read, or "INTERNAL" for anything that is not one of atlasgen's own messages.

    python benchmarks/zoo.py                 # every model, markdown table on stdout
    python benchmarks/zoo.py resnet18 vit_b_16
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_LIMIT_S = 600


def one(arch: str) -> dict:
    import torch
    import torchvision

    from atlasgen.config import DEMO, ModelConfig
    from atlasgen.errors import AtlasError, ConfigError
    from atlasgen.featvis import visualize_channels
    from atlasgen.hooks import input_resized
    from atlasgen.models import build_model, check_models, fixed_input, select_layers, smallest_input
    from atlasgen.receptive import receptive_fields
    from atlasgen.settings import StageSettings, VisSettings

    torch.set_num_threads(1)
    result: dict = {"arch": arch}
    try:
        with tempfile.TemporaryDirectory() as folder:
            kwargs = {"init_weights": False} if arch in ("googlenet", "inception_v3") else {}
            torch.save(torchvision.models.get_model(arch, weights=None, **kwargs).state_dict(), Path(folder) / "w.pth")
            config = ModelConfig(name="m", arch=arch, weights=str(Path(folder) / "w.pth"), layers=None, channels=None,
                                 dataset=DEMO, input_size=None, mean=None, std=None, stages=StageSettings(), index=0)
            check_models([config])
            loaded = build_model(config)
        layers = select_layers(loaded)
        size = loaded.preprocess.input_size
        fields = receptive_fields(loaded.module, [layer.name for layer in layers], size)
        fixed = fixed_input(loaded.module, layers, size)
        smallest = size if fixed else smallest_input(loaded.module, layers, size)
        settings = VisSettings(steps=2, size=size if fixed else 64, objectives=("channel",))
        with input_resized(loaded.module, smallest, fixed):
            for layer in (layers[0], layers[-1]):
                visualize_channels(loaded.module, layer.name, [0], settings, loaded.preprocess, torch.device("cpu"))
        covering = sum(fields[layer.name].covers_input for layer in layers)
        result.update(status="ok", layers=len(layers), channels=sum(layer.channels for layer in layers),
                      layouts=sorted({layer.layout for layer in layers}), covering=covering, smallest=smallest,
                      fixed=fixed, message="")
    except (AtlasError, ConfigError) as exc:
        result.update(status="refused", message=str(exc).splitlines()[0][:160])
    except Exception as exc:  # noqa: BLE001 - the table reports it
        result.update(status="INTERNAL", message=f"{type(exc).__name__}: {str(exc).splitlines()[0][:140] if str(exc) else ''}")
    return result


def sweep(names: list[str]) -> None:
    print("| model | result | s | layers | channels | layouts | fields covering the input | smallest input |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    counts: dict[str, int] = {}
    for name in names:
        began = time.perf_counter()
        try:
            run = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                 timeout=TIME_LIMIT_S)
            line = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
            row = json.loads(line) if line.startswith("{") else {
                "arch": name, "status": "INTERNAL", "message": (run.stderr.strip().splitlines() or ["no output"])[-1][:160],
                "seconds": ""}
        except subprocess.TimeoutExpired:
            row = {"arch": name, "status": "timeout", "message": f"over {TIME_LIMIT_S} s", "seconds": TIME_LIMIT_S}
        row["seconds"] = round(time.perf_counter() - began, 1)  # the whole process, as a user waits for it
        counts[row["status"]] = counts.get(row["status"], 0) + 1
        if row["status"] == "ok":
            size = f"{row['smallest']}{' (fixed)' if row['fixed'] else ''}"
            print(f"| {name} | ok | {row['seconds']} | {row['layers']} | {row['channels']} | {', '.join(row['layouts'])} | "
                  f"{row['covering']} | {size} |", flush=True)
        else:
            print(f"| {name} | {row['status']}: {row['message']} | {row['seconds']} | | | | | |", flush=True)
    print("\n" + ", ".join(f"{status}: {count}" for status, count in sorted(counts.items())))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(sys.argv[2])))
    else:
        import torchvision

        sweep(sys.argv[1:] or torchvision.models.list_models(module=torchvision.models))
