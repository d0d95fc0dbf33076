"""The import rules, read from the source with ``ast``.

core (streambridge/*.py)        imports only the core
roles (bridge, producers,       import the core and themselves; the standalone app
  webapp.ext, webapp.app)       is built on the extension (app -> ext), never back
top (cli, commands, dev,        may import anything, lazily
  __init__)
Nothing installed imports ``tests``, and nothing anywhere imports the role folders
by their repository names (``import webapp`` would load a second copy).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from tests.support import ROOT

# Folder -> the package it is installed as (pyproject's package-dir).
PACKAGES = {
    "streambridge": "streambridge",
    "bridge": "streambridge.bridge",
    "producers": "streambridge.producers",
    "webapp": "streambridge.webapp",
    "templates": "streambridge.templates",
}
ROLES = (
    "streambridge.bridge",
    "streambridge.producers",
    "streambridge.webapp.ext",
    "streambridge.webapp.app",
)
ALLOWED_ROLE_EDGES = {("streambridge.webapp.app", "streambridge.webapp.ext")}
TOP = (
    "streambridge",
    "streambridge.cli",
    "streambridge.commands",
    "streambridge.dev",
    "streambridge.__main__",
)
REPOSITORY_NAMES = ("webapp", "bridge", "producers", "templates")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _installed_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for folder in PACKAGES
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from streambridge import keys`` imports the module streambridge.keys;
            # ``from streambridge.keys import history`` imports a name of streambridge.keys.
            modules = _installed_modules()
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.append(submodule if submodule in modules else node.module)
    return names


def _layer(module: str) -> str:
    if module in TOP:
        return "top"
    for role in ROLES:
        if module == role or module.startswith(role + "."):
            return role
    return "core"


def _ours(name: str) -> str | None:
    """The module of ours that an import names (None: not ours, or a name in one)."""
    modules = _installed_modules()
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def test_the_rules_see_every_layer():
    layers = {_layer(m) for m in _installed_modules()}
    assert layers == {"top", "core", *ROLES}


@pytest.mark.parametrize("module", sorted(_installed_modules()))
def test_imports_follow_the_layers(module):
    layer = _layer(module)
    if layer == "top":
        return
    for name in _imports(_installed_modules()[module]):
        target = _ours(name)
        assert not name.startswith("tests"), f"{module} imports test code: {name}"
        if target is None:
            continue
        target_layer = _layer(target)
        if layer == "core":
            assert target_layer == "core", f"core module {module} imports {target}"
        elif target_layer not in ("core", layer):
            assert (layer, target_layer) in ALLOWED_ROLE_EDGES, (
                f"{module} ({layer}) imports {target} ({target_layer})"
            )


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for folder in (*PACKAGES, "tests", "bench", "examples")
        for p in (ROOT / folder).rglob("*.py")
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_imports_a_role_folder_by_its_repository_name(path):
    for name in _imports(path):
        assert name.split(".")[0] not in REPOSITORY_NAMES, f"{path}: import {name}"
