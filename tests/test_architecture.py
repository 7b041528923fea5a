"""Project-wide rules, checked: module docstrings, one-way imports, described settings, documented views."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

from service import settings as settings_module

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "ingest", "storage", "api")

# Which project packages each package may import (service/cli* and the scheduler sit on top).
ALLOWED = {
    "storage": {"storage", "service.errors"},
    "ingest": {"ingest", "storage", "service.errors"},
    "api": {"api", "storage", "service.errors"},
}


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found.update(n for n in names if n.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_opens_with_a_one_line_docstring(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc, f"{path} has no module docstring"
    assert doc.splitlines()[0].strip(), f"{path}: the docstring's first line is empty"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    imports = _project_imports(path)
    if path.relative_to(ROOT).as_posix() in ("service/errors.py", "service/settings.py"):
        assert imports == set(), f"{path} must import nothing of the project"
        return
    if package == "service":
        return
    allowed = ALLOWED[package]
    bad = {i for i in imports if not any(i == a or i.startswith(a + ".") for a in allowed)}
    assert not bad, f"{path} imports {sorted(bad)}, which {package}/ must not import"


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found.extend(_models(candidate))
    return found


def test_every_setting_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in _models(settings_module.Settings)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert missing == []


def test_every_registered_view_is_documented_in_the_docs() -> None:
    from storage.views import VIEWS

    docs = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "docs" / "design.md").read_text(
        encoding="utf-8"
    )
    undocumented = [v.name for v in VIEWS if f"`{v.name}`" not in docs or not v.doc.strip()]
    assert undocumented == []


def _commands() -> list[tuple[str, object]]:
    import typer.main

    from service.cli import app

    group = typer.main.get_command(app)
    found: list[tuple[str, object]] = []

    def walk(prefix: str, command: object) -> None:
        sub = getattr(command, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(f"{prefix} {name}".strip(), child)
        else:
            found.append((prefix, command))

    walk("", group)
    return found


def test_every_cli_command_has_help_with_an_example() -> None:
    commands = _commands()
    assert {"sql", "ingest files", "ingest kafka"} <= {name for name, _ in commands}
    lacking = [name for name, command in commands if "Example:" not in (getattr(command, "help", "") or "")]
    assert lacking == []
