"""What the site may say about the build machine's files: a file's name and digest, never its
path. A weights file or a model factory given as a path (absolute once the config is read)
would otherwise publish the user's folders (`/home/ada/private/r18.pt`) on the open web."""

from __future__ import annotations

import re
from pathlib import PurePath

_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text


def public_weights(label: str, digest: str | None) -> str:
    """The weights as the pages name them: a file by its name and SHA-256 prefix."""
    if not _looks_like_path(label):
        return label  # a torchvision weights name, or a source's description
    name = PurePath(label.replace("\\", "/")).name
    return f"{name} (sha256 {digest[:12]})" if digest and _HEX_DIGEST.fullmatch(digest) else name


def public_arch(arch: str) -> str:
    """A factory `path/to/file.py:function` as `file.py:function`; other arch strings as they are."""
    target, colon, function = arch.rpartition(":")
    if colon and target.endswith(".py") and _looks_like_path(target):
        return f"{PurePath(target.replace(chr(92), '/')).name}:{function}"
    return arch
