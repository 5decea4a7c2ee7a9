"""The commands a new user reaches for: `new`, `layers` (fast without a config, blaming the
argument it was given, `--all`), `-vv` scoped to atlasgen, `serve` (404 page, no listings, a
busy port, --open), `train-demo` threads, and citations that name atlasgen and the config."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sitefixture import make_site_data

from atlasgen.cli import _setup_logging, main
from atlasgen.config import load_config
from atlasgen.errors import AtlasError
from atlasgen.render import render_site
from atlasgen.serve import make_server


def test_new_writes_a_commented_config_that_loads_and_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(main, ["new", str(tmp_path), "--model", "resnet18", "--dataset", "images", "--weights", "DEFAULT"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "atlas.toml"
    text = path.read_text()
    assert "# top_k = 10" in text and "# url = ..." in text  # every other setting, commented, with its default
    config = load_config(path)
    assert (config.models[0].name, config.models[0].arch, config.models[0].weights) == ("resnet18", "resnet18", "DEFAULT")
    assert Path(config.models[0].dataset) == tmp_path / "images"
    path.write_text("# mine\n")
    again = CliRunner().invoke(main, ["new", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output and "never overwrites" in again.output
    assert path.read_text() == "# mine\n"
    missing = CliRunner().invoke(main, ["new", str(tmp_path / "other"), "--dataset", "nowhere"])
    assert missing.exit_code == 1 and "--dataset 'nowhere' is not a folder" in missing.output


def test_new_demo_config_builds_as_written(tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["new", str(tmp_path)]).exit_code == 0
    config = load_config(tmp_path / "atlas.toml")
    assert config.models[0].arch == "demo" and config.models[0].dataset == "demo"


def test_layers_without_a_config_answers_before_importing_torch(tmp_path: Path) -> None:
    probe = ("import sys; from click.testing import CliRunner; from atlasgen.cli import main; "
             "r = CliRunner().invoke(main, ['layers']); print(r.exit_code, r.output); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False).stdout
    assert "1 error: atlas.toml not found" in out and "atlasgen new" in out
    assert out.strip().endswith("False")


def test_layers_blames_the_argument_not_the_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["layers", "-c", str(tmp_path / "atlas.toml"), "nosuchmodel"])
    assert result.exit_code == 1
    assert "argument MODEL 'nosuchmodel': no torchvision model named 'nosuchmodel'" in result.output
    assert "atlas.toml" not in result.output and "models[0]" not in result.output


def test_layers_all_lists_every_module_and_totals_honour_channels(tmp_path: Path) -> None:
    every = CliRunner().invoke(main, ["layers", "-c", str(tmp_path / "none.toml"), "demo", "--all"])
    assert every.exit_code == 0, every.output
    assert "conv2.0" in every.output and "BatchNorm2d" in every.output and "relu2" in every.output
    assert "32x32x32" in every.output
    config = tmp_path / "atlas.toml"
    config.write_text('[[models]]\nname = "demo"\narch = "demo"\nlayers = ["conv1", "conv2"]\nchannels = "0:4"\n')
    table = CliRunner().invoke(main, ["layers", "-c", str(config)])
    assert "2 layers, 48 channels, 8 in the atlas" in table.output
    assert "(all) = it covers the whole input" in table.output


def test_vv_shows_atlasgen_debug_lines_but_not_other_libraries() -> None:
    try:
        _setup_logging(2, False)
        assert logging.getLogger("atlasgen.build").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("PIL.PngImagePlugin").isEnabledFor(logging.DEBUG)
        _setup_logging(0, False)
        assert not logging.getLogger("atlasgen.build").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("atlasgen.build").isEnabledFor(logging.INFO)
    finally:
        logging.getLogger("atlasgen").setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("served")
    out = tmp / "site"
    render_site(make_site_data(tmp / "cache"), out)
    return out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serve_answers_missing_pages_with_the_sites_404_and_lists_no_folder(site: Path) -> None:
    server = make_server(site, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        assert _get(base)[0] == 200 and _get(base + "demo/conv1/index.html")[0] == 200
        for missing in ("nowhere/index.html", "assets/", "demo/conv1/999/"):
            status, body = _get(base + missing)
            assert status == 404 and "Page not found" in body and "Directory listing" not in body
    finally:
        server.shutdown()
        server.server_close()


def test_serve_on_a_busy_port_says_so(site: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--output", str(site), "--port", str(port), "--no-watch"])
    assert result.exit_code == 1
    assert f"--port {port}: the port is already in use" in result.output and "Traceback" not in result.output


def test_serve_open_opens_the_browser(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server

    opened: list[str] = []
    done = threading.Event()
    monkeypatch.setattr("webbrowser.open", lambda url: (opened.append(url), done.set()))
    monkeypatch.setattr(http.server.ThreadingHTTPServer, "serve_forever", lambda self: done.wait(10))
    result = CliRunner().invoke(main, ["serve", "--output", str(site), "--port", "0", "--open", "--no-watch"])
    assert result.exit_code == 0, result.output
    assert len(opened) == 1 and opened[0].startswith("http://127.0.0.1:")


def test_train_demo_fixes_torch_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    seen: list[int] = []
    monkeypatch.setattr("atlasgen.demo.train.train", lambda output, seed, log: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        assert CliRunner().invoke(main, ["train-demo", "-o", str(tmp_path / "w.pt")]).exit_code == 0
        assert CliRunner().invoke(main, ["train-demo", "-o", str(tmp_path / "w.pt"), "--threads", "2"]).exit_code == 0
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]


def test_unit_citation_names_atlasgen_version_and_config(site: Path) -> None:
    html = (site / "demo/conv1/2/index.html").read_text()
    text = html.split('class="cite-text">', 1)[1].split("</p>", 1)[0]
    assert "made with atlasgen 0.1.0, config 3f2a3f2a3f2a" in text
    assert "(no public URL configured; in the atlas: demo/conv1/2/index.html)" in text


def test_make_server_error_is_an_atlas_error_for_busy_ports(site: Path) -> None:
    first = make_server(site, 0)
    try:
        with pytest.raises(AtlasError, match="already in use"):
            make_server(site, first.server_address[1])
    finally:
        first.server_close()
