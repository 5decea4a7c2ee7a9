"""atlas.toml validation: every problem at once, with its key path."""

from pathlib import Path

import pytest

from atlasgen.config import DEMO, load_config
from atlasgen.errors import ConfigError


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
