"""atlas.toml validation: every problem at once, with its key path."""

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from atlasgen import objectives
from atlasgen.config import DEMO, REFERENCE, ModelConfig, SiteConfig, _Build, load_config, reference_markdown
from atlasgen.errors import ConfigError
from atlasgen.objectives import Objective
from atlasgen.parsers import Problems, choice, integer, keys, setting
from atlasgen.settings import ExamplesSettings, ImageSettings, Octave, SimilaritySettings, StageSettings, VisSettings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "atlas.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


def test_minimal_config_gets_defaults(tmp_path):
    config = load_config(write(tmp_path, '[[models]]\nname = "demo"\narch = "demo"\n'))
    assert config.site.output == tmp_path / "site"
    assert config.site.cache == tmp_path / ".atlas-cache"
    model = config.models[0]
    assert model.dataset == DEMO and model.layers is None and model.channels is None
    assert model.stages.examples.top_k == 10
    assert config.device == "auto"


def test_per_model_settings_override_top_level(tmp_path):
    config = load_config(write(tmp_path, """
[visualize]
steps = 64
size = 96
[[models]]
name = "a"
arch = "demo"
[[models]]
name = "b"
arch = "demo"
channels = "4:8"
[models.visualize]
steps = 32
"""))
    a, b = config.models
    assert (a.stages.visualize.steps, a.stages.visualize.size) == (64, 96)
    assert (b.stages.visualize.steps, b.stages.visualize.size) == (32, 96)
    assert b.channels == (4, 8)


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    found = problems(tmp_path, """
[site]
titel = "x"
[visualize]
steps = "many"
objectives = ["channel", "postive"]
[examples]
top_k = 0
[[models]]
name = "bad name"
arch = "demo"
channels = "8:2"
[models.examples]
botom_k = 3
""")
    paths = [path for path, _ in found]
    assert paths == [
        "site.titel", "visualize.steps", "visualize.objectives[1]", "examples.top_k",
        "models[0].name", "models[0].channels", "models[0].examples.botom_k",
    ]
    messages = dict(found)
    assert "did you mean 'title'?" in messages["site.titel"]
    assert "did you mean 'positive'" not in messages["visualize.objectives[1]"]
    assert "'negative'" in messages["visualize.objectives[1]"]
    assert "expected an integer, got a string 'many'" in messages["visualize.steps"]
    assert "did you mean 'bottom_k'?" in messages["models[0].examples.botom_k"]
    assert "must be at least 1" in messages["examples.top_k"]


def test_malformed_toml_names_the_line(tmp_path):
    found = problems(tmp_path, '[site]\ntitle = "x"\noutput = \n')
    assert "line 3" in found[0][1]


def test_missing_model_keys_and_paths(tmp_path):
    found = problems(tmp_path, """
[[models]]
arch = "nets.py:make"
weights = "missing.pt"
dataset = "no/such/folder"
""")
    messages = dict(found)
    assert "missing 'name'" in messages["models[0]"]
    assert "nets.py" in messages["models[0].arch"] and "does not exist" in messages["models[0].arch"]
    assert "missing.pt" in messages["models[0].weights"]
    assert "no/such/folder" in messages["models[0].dataset"]


def test_octave_shares_must_add_up(tmp_path):
    found = problems(tmp_path, """
[visualize]
octaves = [{scale = 0.5, share = 0.5, lr = [0.05, 0.05], blur = [1.0, 0.5]},
           {scale = 0.8, share = 0.3, lr = [0.05, 0.02], blur = [0.5, 0.0]}]
[[models]]
name = "demo"
arch = "demo"
""")
    messages = dict(found)
    assert "add up to 0.8" in messages["visualize.octaves"] or any("add up to 0.8" in m for _, m in found)
    assert any("scale = 1.0" in m for _, m in found)


def test_pixel_pad_and_jitter_get_a_conversion_message(tmp_path):
    found = dict(problems(tmp_path, """
[visualize]
pad = 12
jitter = 0.75
[[models]]
name = "demo"
arch = "demo"
"""))
    assert "looks like pixels" in found["visualize.pad"] and "0.094" in found["visualize.pad"]
    assert "at most 0.5" in found["visualize.jitter"]


def test_missing_file_and_no_models(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    found = problems(tmp_path, "[site]\ntitle = 'x'\n")
    assert found[0][0] == "models"


def test_duplicate_names_and_bad_url(tmp_path):
    found = problems(tmp_path, """
[site]
url = "example.org/atlas"
[[models]]
name = "m"
arch = "demo"
[[models]]
name = "m"
arch = "demo"
""")
    paths = [p for p, _ in found]
    assert "site.url" in paths and "models[1].name" in paths


# ---------------------------------------------------------------- declarations


def test_every_setting_is_declared_with_a_parser_and_a_doc():
    for cls in (VisSettings, Octave, ExamplesSettings, SimilaritySettings, ImageSettings, StageSettings, SiteConfig, _Build):
        for f in dataclasses.fields(cls):
            assert {"parser", "section", "subtables"} & f.metadata.keys(), f"{cls.__name__}.{f.name} is not declared"
            assert f.metadata["doc"].strip(), f"{cls.__name__}.{f.name} has no doc"
    undeclared = {f.name for f in dataclasses.fields(ModelConfig) if "parser" not in f.metadata}
    assert undeclared == {"stages", "index"}


def test_declared_defaults_pass_their_own_parsers():
    for cls in (VisSettings, ExamplesSettings, SimilaritySettings, ImageSettings, _Build):
        for name, f in keys(cls).items():
            value = f.default
            raw = json.loads(json.dumps(value, default=dataclasses.asdict))  # as TOML would give it
            found = Problems()
            assert f.metadata["parser"](raw, name, found) == value and not found.items, (cls.__name__, name, found.items)


def test_objectives_are_checked_against_the_registry(tmp_path):
    found = problems(tmp_path, '[visualize]\nobjectives = ["channel", "chanel"]\n[[models]]\nname = "m"\narch = "demo"\n')
    assert found == [("visualize.objectives[1]",
                      f"must be one of {', '.join(repr(n) for n in objectives.names())}, got 'chanel'; did you mean 'channel'?")]
    config = load_config(write(tmp_path, '[visualize]\nobjectives = ["neuron", "channel", "neuron"]\n[[models]]\nname = "m"\narch = "demo"\n'))
    assert config.models[0].stages.visualize.objectives == ("neuron", "channel")


def test_settings_reference_is_current():
    """docs/settings.md is generated; regenerate it with the command it names."""
    assert REFERENCE.read_text(encoding="utf-8") == reference_markdown()


def test_config_does_not_import_torch():
    code = "import sys, atlasgen.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- objective options


@dataclass(frozen=True)
class ProbeOptions:
    """Options of the probe objective."""

    row: int = setting(0, integer(0, 64), "row of the unit")
    col: int = setting(0, integer(0, 64), "column of the unit")
    mode: str = setting("max", choice("max", "min"), "direction")


@pytest.fixture
def probe():
    def zero(acts, rows, channels, settings):
        return acts[rows, channels].mean()

    objective = objectives.register(Objective(name="probe", label="Probe", order=99, loss=zero, score=zero, options=ProbeOptions))
    yield objective
    del objectives._REGISTRY["probe"]


PROBE = """
[visualize]
objectives = ["channel", "probe"]
[visualize.probe]
row = 3
[[models]]
arch = "demo"
name = "a"
[[models]]
arch = "demo"
name = "b"
[models.visualize]
steps = 8
[models.visualize.probe]
col = 5
[[models]]
name = "c"
arch = "demo"
[models.visualize.probe]
row = 1
"""


def test_objective_options_from_sub_tables(tmp_path, probe):
    a, b, c = (m.stages.visualize for m in load_config(write(tmp_path, PROBE)).models)
    assert a.options == (("probe", ProbeOptions(row=3)),)
    assert a.options_for("probe") == ProbeOptions(row=3, col=0)
    assert b.options_for("probe") == ProbeOptions(row=3, col=5) and b.steps == 8
    assert c.options_for("probe") == ProbeOptions(row=1)
    assert a.options_for("channel") is None
    assert json.dumps(dataclasses.asdict(b), sort_keys=True)  # still a cache-key dict
    assert "## `[visualize.probe]`" in reference_markdown() and "| `row` | integer | `0` | 0 to 64 | row of the unit |" in reference_markdown()


def test_objective_options_default_when_not_given(tmp_path, probe):
    vis = load_config(write(tmp_path, '[visualize]\nobjectives = ["probe"]\n[[models]]\nname = "m"\narch = "demo"\n')).models[0].stages.visualize
    assert vis.options == ()
    assert vis.options_for("probe") == ProbeOptions()
    assert dataclasses.asdict(VisSettings())["options"] == ()


def test_objective_option_problems_have_key_paths(tmp_path, probe):
    found = problems(tmp_path, """
[visualize.probe]
row = 100
colum = 1
mode = "mid"
[[models]]
name = "m"
arch = "demo"
[models.visualize.prob]
row = 1
[models.visualize.probe]
row = "x"
[models.visualize.channel]
row = 1
""")
    messages = dict(found)
    assert [path for path, _ in found] == [
        "visualize.probe.row", "visualize.probe.colum", "visualize.probe.mode",
        "models[0].visualize.prob", "models[0].visualize.probe.row", "models[0].visualize.channel",
    ]
    assert messages["visualize.probe.row"] == "must be at most 64, got 100"
    assert messages["visualize.probe.colum"] == "unknown key; did you mean 'col'? (known keys: col, mode, row)"
    assert messages["visualize.probe.mode"] == "must be one of 'max', 'min', got 'mid'; did you mean 'min'?"
    assert "did you mean 'probe'?" in messages["models[0].visualize.prob"] and ", probe, " in messages["models[0].visualize.prob"]
    assert messages["models[0].visualize.probe.row"] == "expected an integer, got a string 'x'"
    assert messages["models[0].visualize.channel"].startswith("unknown key (known keys: ")
