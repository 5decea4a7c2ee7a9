"""The small commands: layers, serve, clean wiring, version."""

from click.testing import CliRunner

from atlasgen.cli import main


def test_layers_of_the_demo_model(tmp_path):
    result = CliRunner().invoke(main, ["layers", "-c", str(tmp_path / "none.toml"), "demo"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "demo (demo), input 64x64"
    conv4 = next(line for line in lines if line.startswith("conv4"))
    assert conv4.split()[:4] == ["conv4", "128", "8x8", "38x38"]
    assert lines[-2] == "4 layers, 240 channels"
    assert lines[-1].startswith("receptive field: ") and "(all) = it covers the whole input" in lines[-1]


def test_layers_needs_a_model_or_a_config(tmp_path):
    result = CliRunner().invoke(main, ["layers", "-c", str(tmp_path / "none.toml")])
    assert result.exit_code == 1 and "name a model" in result.output


def test_serve_without_a_site_says_to_build(tmp_path):
    (tmp_path / "atlas.toml").write_text('[[models]]\nname = "demo"\narch = "demo"\n')
    result = CliRunner().invoke(main, ["serve", "-c", str(tmp_path / "atlas.toml")])
    assert result.exit_code == 1 and "run `atlasgen build` first" in result.output
