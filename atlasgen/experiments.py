"""`[[models.experiments]]`: the pages of experiments a user turns on for chosen units.

Each kind of experiment is a stage (`atlasgen/stages/`) whose `experiment` attribute is the
dataclass of its table's keys (declared with `setting`/`required`, so docs/settings.md lists
them); the table's `kind` names the stage. Tables are checked when atlas.toml is read; the
layers and channels they name are checked when the model is planned, with the same key paths
(`models[0].experiments[1].channel`). No torch here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atlasgen.errors import ConfigError
from atlasgen.parsers import Parser, Problems, as_table, hint, table_of


@dataclass(frozen=True)
class Experiment:
    kind: str  # the stage that computes it
    index: int  # its position in the model's experiments, for key paths
    settings: Any  # the kind's dataclass of its keys


def kinds() -> dict[str, type]:
    """Experiment kind -> the dataclass of its keys, from the stages that declare one."""
    from atlasgen import stages  # imported when asked: stages import the config

    return {stage.name: stage.experiment for stage in stages.all_stages() if stage.experiment is not None}


def _experiments(value: Any, path: str, problems: Problems) -> tuple[Experiment, ...] | None:
    if not isinstance(value, list):
        problems.add(path, "expected [[models.experiments]] tables (a list of tables), for example "
                           "kind = \"neuron-maps\", layer = \"conv3\", channel = 5")
        return None
    known = kinds()
    found = []
    for i, raw in enumerate(value):
        where = f"{path}[{i}]"
        table = as_table(raw, where, problems)
        if table is None:
            continue
        kind = table.get("kind")
        if kind not in known:
            got = "missing" if kind is None else f"got {kind!r}{hint(str(kind), known)}"
            problems.add(f"{where}.kind", f"{got}; an experiment's kind is one of {', '.join(map(repr, known))}")
            continue
        rest = {key: item for key, item in table.items() if key != "kind"}
        settings = table_of(known[kind], f"a {kind} experiment")(rest, where, problems)
        if settings is not None:
            found.append(Experiment(kind, i, settings))
    return tuple(found)


experiment_list = Parser(_experiments, "list of tables", lambda: "each with kind = " + ", ".join(map(repr, kinds())) +
                         "; see `[[models.experiments]]`")


def of_kind(config, kind: str) -> list[Experiment]:
    """The model's experiments of `kind`, in the order written."""
    return [e for e in config.experiments if e.kind == kind]


def problem(config, experiment: Experiment, key: str, message: str) -> ConfigError:
    """A mistake found when the model is planned, at the experiment key's path."""
    return ConfigError([(f"{config.path}.experiments[{experiment.index}].{key}", message)])


def layer_info(basis, experiment: Experiment, name: str, key: str = "layer"):
    """The selected layer `name` (a LayerInfo), or a ConfigError naming the key."""
    for layer in basis.layers:
        if layer.name == name:
            return layer
    raise problem(basis.config, experiment, key, f"{name!r} is not one of the atlas's layers of this model "
                  f"({', '.join(layer.name for layer in basis.layers)}); name one of them, or add it to models[].layers")


def check_channel(basis, experiment: Experiment, layer, channel: int, key: str) -> None:
    if not 0 <= channel < layer.channels:
        raise problem(basis.config, experiment, key, f"layer {layer.name!r} has channels 0 to {layer.channels - 1}; "
                      f"got {channel}")
