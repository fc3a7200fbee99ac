"""Files that ship with digest: templates, the default config and the sample paper list.

In a built wheel they sit inside the package (hatchling ``force-include``); in a source
checkout or an editable install they sit at the project's top level, beside the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"digest is missing its {name!r}: reinstall the package")


def templates_dir() -> Path:
    """The folder holding email/ and web/ templates."""
    return _find("templates")


def default_config_path() -> Path:
    """The documented default config.toml."""
    return _find("config.toml")


def bundled_path(name: str) -> Path:
    """A data file shipped in ``digest/data`` (e.g. the sample paper list)."""
    path = (_PACKAGE / "data" / name).resolve()
    if path.parent != (_PACKAGE / "data").resolve() or not path.is_file():
        raise FileNotFoundError(f"no bundled file named {name!r}")
    return path
