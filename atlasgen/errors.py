"""User-facing errors: the CLI prints their message and exits non-zero, no traceback."""


class AtlasError(Exception):
    """A problem with the user's input that they can fix; the message says how."""


class ConfigError(AtlasError):
    """Every problem found in one validation pass of atlas.toml."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "atlas.toml"):
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}:"]
        lines += [f"  {path}: {msg}" if path else f"  {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))
