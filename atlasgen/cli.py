"""The `atlasgen` command: thin click commands over functions in the stage modules.

Heavy imports (torch) happen inside the commands so `--help` and configuration errors
are instant. User errors print one clear message and exit 1; tracebacks only with -v."""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from pathlib import Path

import click

from atlasgen.errors import AtlasError

log = logging.getLogger("atlasgen")


def _setup_logging(verbose: int, quiet: bool) -> None:
    """-q: warnings; default and -v: information; -vv: atlasgen's own debug lines. Other
    libraries' loggers stay at information (PIL's debug chatter is thousands of lines)."""
    import os

    level = logging.WARNING if quiet else logging.INFO
    prefix = ""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        prefix = f"[rank {os.environ.get('RANK', '?')}] "
    logging.basicConfig(level=level, format=f"{prefix}%(levelname)s %(name)s: %(message)s" if verbose else f"{prefix}%(message)s",
                        force=True)
    log.setLevel(logging.DEBUG if verbose > 1 and not quiet else logging.NOTSET)


def _friendly_errors(command):
    """Turn user errors into a message and exit code; keep tracebacks for -v."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        verbose = kwargs.get("verbose", 0)
        try:
            return command(*args, **kwargs)
        except AtlasError as exc:
            if verbose:
                traceback.print_exc()
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.secho("\ninterrupted: finished work is kept in the cache; run the same command again to resume.", fg="yellow", err=True)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # an atlasgen bug or an unexpected environment problem
            if verbose:
                traceback.print_exc()
            click.secho(f"error: {type(exc).__name__}: {exc}\n(run again with -v for the full traceback)", fg="red", err=True)
            sys.exit(1)

    return wrapper


def _verbosity(command):
    command = click.option("-v", "--verbose", count=True, help="More detail; -v also shows tracebacks.")(command)
    return click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")(command)


_config_option = click.option(
    "--config", "-c", "config_path", type=click.Path(path_type=Path), default="atlas.toml", show_default=True,
    help="The atlas configuration file.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atlasgen")
def main() -> None:
    """Build static, citable feature atlases of image networks."""


@main.command()
@_config_option
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Output folder (default: site.output).")
@click.option("--only", metavar="MODEL[/LAYER]", help="Compute only this model, or one layer of it; the site still lists the rest.")
@click.option("--force", is_flag=True, help="Recompute everything, ignoring the cache.")
@click.option("--dry-run", is_flag=True, help="Show what would be computed and why, then stop.")
@click.option("--device", help="Override build.device: auto, cpu, cuda, cuda:N, mps.")
@click.option("--shard", metavar="I/N", help="Compute only share I of N of the work (for job arrays); no rendering unless I is 0.")
@click.option("--adopt", is_flag=True, help="Build into an output folder that holds other files; they are never "
              "overwritten or removed (a build that would have to replace one stops before writing).")
@_verbosity
@_friendly_errors
def build(config_path: Path, output: Path | None, only: str | None, force: bool, dry_run: bool, device: str | None,
          shard: str | None, adopt: bool, verbose: int, quiet: bool) -> None:
    """Compute what is missing and render the site."""
    _setup_logging(verbose, quiet)
    from atlasgen import distributed
    from atlasgen.build import BuildOptions, build as run_build

    config = _load_first_round(config_path)
    ranks = distributed.parse_shard(shard) if shard else distributed.from_environment()
    options = BuildOptions(output=output, only=only, force=force, dry_run=dry_run, device=device, ranks=ranks,
                           progress=not quiet, adopt=adopt)
    summary = run_build(config, options)
    _report(summary, dry_run, ranks.main)


def _load_first_round(config_path: Path):
    """The config, checked in one pass; its problems say that more may follow, since layer names
    and weights files can only be checked once the model has loaded."""
    from atlasgen.config import load_config
    from atlasgen.errors import ConfigError

    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise AtlasError(f"{exc}\nLayer names and weights files are checked when the model loads, after these are "
                         "fixed, so a second round of problems may follow.") from None


def _report(summary, dry_run: bool, main_rank: bool) -> None:
    if dry_run:
        if not summary.plan:
            click.echo("nothing to compute: every unit is in the cache")
        for unit, why in summary.plan:
            click.echo(f"would compute {unit.id}  ({why})")
        click.echo(f"{len(summary.plan)} units to compute, {sum(summary.cached.values())} from the cache")
        return
    computed = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.computed.items())) or "none"
    cached = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.cached.items())) or "none"
    log.info("computed: %s; from the cache: %s", computed, cached)
    if summary.corrupt:
        log.warning("%d damaged cache entries were recomputed", summary.corrupt)
    if summary.images_per_second:
        log.info("dataset pass: %.1f images/s", summary.images_per_second)
    if summary.skipped_images:
        shown = ", ".join(summary.skipped_images[:5])
        log.warning("skipped %d unreadable images: %s%s", len(summary.skipped_images), shown, " ..." if len(summary.skipped_images) > 5 else "")
    log.info("time: %s", ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in summary.seconds.items()))
    for warning in summary.warnings:
        log.warning("%s", warning)
    if main_rank and summary.output is not None:
        log.info("site: %s (%d pages, %.1f MB); open %s", summary.output, summary.pages, summary.bytes / 1e6, summary.output / "index.html")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path), default=Path("."))
@click.option("--model", "arch", default="demo", show_default=True,
              help='The network: "demo", a torchvision name (resnet18), or path/to/file.py:function.')
@click.option("--dataset", default="demo", show_default=True, help='A folder of images (relative to FOLDER), or "demo".')
@click.option("--weights", help="A weights file, or a torchvision weights name (DEFAULT, IMAGENET1K_V1).")
@_verbosity
@_friendly_errors
def new(folder: Path, arch: str, dataset: str, weights: str | None, verbose: int, quiet: bool) -> None:
    """Write a commented atlas.toml into FOLDER (never over an existing one)."""
    _setup_logging(verbose, quiet)
    from atlasgen.scaffold import write_new_config

    path = write_new_config(folder / "atlas.toml", arch, dataset, weights)
    log.info("wrote %s; see its layers with `atlasgen layers -c %s`, then run `atlasgen build -c %s`", path, path, path)


@main.command()
@_config_option
@click.argument("model", required=False)
@click.option("--all", "every_module", is_flag=True, help="List every named module with its output shape, not only the layers.")
@_verbosity
@_friendly_errors
def layers(config_path: Path, model: str | None, every_module: bool, verbose: int, quiet: bool) -> None:
    """List the layers of a configured model, or of a torchvision model by name:
    channels, output size and receptive field."""
    _setup_logging(verbose, quiet)
    if model is None and not config_path.is_file():  # before importing torch: this answer should be instant
        raise AtlasError(f"{config_path} not found; name a model, for example `atlasgen layers googlenet`, "
                         "or write a config with `atlasgen new`")
    from atlasgen.errors import ConfigError
    from atlasgen.layertable import layer_table
    from atlasgen.moduletable import configured, module_table

    try:
        lines = list(module_table(config_path, model) if every_module else layer_table(config_path, model))
    except ConfigError as exc:
        if model is None or configured(config_path, model):
            raise
        # the model was named on the command line, not in the config: say so
        raise AtlasError("; ".join(f"argument MODEL {model!r}: {message}" for _, message in exc.problems)) from None
    for line in lines:
        click.echo(line)
    if not every_module:
        click.echo("receptive field: input pixels that can affect one position; (all) = it covers the whole input")


@main.command()
@_config_option
@click.option("--port", default=8000, show_default=True, help="Port on localhost.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Folder to serve (default: site.output).")
@click.option("--open", "open_browser", is_flag=True, help="Open the site in the web browser.")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Rebuild when the config, notes or templates change (needs the config).")
@_verbosity
@_friendly_errors
def serve(config_path: Path, port: int, output: Path | None, open_browser: bool, watch: bool, verbose: int, quiet: bool) -> None:
    """Preview the site on http://127.0.0.1:PORT/, rebuilding it on changes."""
    _setup_logging(verbose, quiet)
    from atlasgen.serve import serve as run_server
    from atlasgen.serve import watcher_for

    if output is None or watch and config_path.is_file():
        from atlasgen.config import load_config

        config = load_config(config_path)
        output = output or config.site.output
    watcher = watcher_for(config_path, output) if watch and config_path.is_file() else None
    run_server(output, port, open_browser, watcher)


@main.command("train-demo")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("demo-weights.pt"), show_default=True,
              help="Where to write the trained state_dict.")
@click.option("--seed", default=0, show_default=True, help="Seed of the initialization and data order.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1),
              help="Torch CPU threads; the same seed and thread count give the same weights on one machine.")
@_verbosity
@_friendly_errors
def train_demo(output: Path, seed: int, threads: int, verbose: int, quiet: bool) -> None:
    """Train the built-in demo CNN on the generated dataset, reproducibly."""
    _setup_logging(verbose, quiet)
    import torch

    from atlasgen.demo.train import train

    # Float sums depend on how work is split across threads: fix the split, fix the weights.
    torch.set_num_threads(threads)
    train(output, seed=seed, log=log.info)  # it reports its result once, with the file written


@main.command()
@_config_option
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@_verbosity
@_friendly_errors
def clean(config_path: Path, dry_run: bool, verbose: int, quiet: bool) -> None:
    """Remove cache entries that no unit of the current configuration uses."""
    _setup_logging(verbose, quiet)
    from atlasgen.clean import clean_cache
    from atlasgen.config import load_config

    removed, freed = clean_cache(load_config(config_path), dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    log.info("%d unused cache entries; %s %.1f MB", removed, verb, freed / 1e6)
