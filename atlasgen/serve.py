"""`atlasgen serve`: preview the site on localhost, as GitHub Pages would serve it (the site's
own 404.html for a missing page, no folder listings), and optionally rebuild when the config,
the notes or the templates change (`mkdocs serve` style). A rebuild goes through the cache, so
it recomputes only what the change affects: a note or a template re-renders the pages."""

from __future__ import annotations

import errno
import functools
import http.server
import logging
import threading
import webbrowser
from collections.abc import Callable, Iterable
from pathlib import Path

from atlasgen.errors import AtlasError

log = logging.getLogger(__name__)


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of one site folder; a missing page or a folder without index.html gets 404.html."""

    def list_directory(self, path):  # type: ignore[override]
        self.send_error(404)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        page = Path(self.directory) / "404.html"
        if code != 404 or not page.is_file():
            super().send_error(code, message, explain)
            return
        body = page.read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # the base class names it `format`
        log.debug("%s %s", self.address_string(), format % args)


def make_server(folder: Path, port: int) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(SiteHandler, directory=str(folder))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AtlasError(f"--port {port}: the port is already in use (another `atlasgen serve`, or another "
                             f"server); stop it or choose a free port, for example --port {port + 1}") from None
        if exc.errno == errno.EACCES:
            raise AtlasError(f"--port {port}: not allowed to listen on this port; choose one above 1023") from None
        raise


def _files(paths: Iterable[Path | None]) -> dict[Path, int]:
    """Every file under the given files and folders, with its modification time."""
    found: dict[Path, int] = {}
    for path in paths:
        if path is None or not path.exists():
            continue
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            try:
                found[file] = file.stat().st_mtime_ns
            except OSError:  # removed while we looked
                pass
    return found


class Watcher(threading.Thread):
    """Polls `paths` (files or folders) and calls `rebuild` after a change; a failed rebuild is
    reported and the previous site stays served."""

    def __init__(self, paths: Callable[[], Iterable[Path | None]], rebuild: Callable[[], None], interval: float = 1.0):
        super().__init__(daemon=True, name="atlasgen-watch")
        self.paths, self.rebuild, self.interval = paths, rebuild, interval
        self.stopped = threading.Event()
        self.rebuilds = 0
        self._seen = _files(paths())

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            now = _files(self.paths())
            if now == self._seen:
                continue
            changed = sorted(str(p) for p in set(now) ^ set(self._seen) | {p for p in now if self._seen.get(p) != now[p]})
            self._seen = now
            log.info("changed: %s; rebuilding", ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else ""))
            try:
                self.rebuild()
            except AtlasError as exc:
                log.error("rebuild failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 (any failure: keep serving the last good site)
                log.error("rebuild failed: %s: %s", type(exc).__name__, exc)
            self.rebuilds += 1

    def stop(self) -> None:
        self.stopped.set()


def serve(folder: Path, port: int, open_browser: bool = False, watcher: Watcher | None = None) -> None:
    """Serve `folder` until Ctrl-C."""
    if not (folder / "index.html").is_file():
        raise AtlasError(f"{folder} holds no built site; run `atlasgen build` first")
    with make_server(folder, port) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        log.info("serving %s on %s (Ctrl-C to stop)%s", folder, url, "; rebuilding on changes" if watcher else "")
        if watcher is not None:
            watcher.start()
        if open_browser:
            threading.Timer(0.2, webbrowser.open, args=(url,)).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            if watcher is not None:
                watcher.stop()


def watcher_for(config_path: Path, output: Path, interval: float = 1.0) -> Watcher:
    """A watcher of the config file and the notes and templates folders it names (read again
    after each rebuild, so a newly set `notes` is watched too) that rebuilds into `output`."""
    from atlasgen.config import load_config

    watched: list[Path | None] = []

    def paths() -> list[Path | None]:
        return [config_path, *watched]

    def rebuild() -> None:
        from atlasgen.build import BuildOptions, build

        config = load_config(config_path)
        watched[:] = [config.site.notes, config.site.templates]
        summary = build(config, BuildOptions(output=output, progress=False))
        computed = sum(summary.computed.values())
        log.info("rebuilt %s: %d pages, %d units computed", output, summary.pages, computed)

    try:
        config = load_config(config_path)
        watched[:] = [config.site.notes, config.site.templates]
    except AtlasError:
        pass  # reported by the first rebuild after the config is fixed
    return Watcher(paths, rebuild, interval)
