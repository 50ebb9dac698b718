"""How the package's parts may depend on each other, checked on the source: ``engine`` and ``analysis`` import
neither the other (a trained model loads through ``sct.models.checkpoint_file``), scripts import the installed
package (no ``sys.path`` edits), and no module imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sct"
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))


def module_name(path: Path) -> str:
    if path.is_relative_to(PACKAGE):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return f"benchmarks.{path.stem}"


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import in ``path``, those inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("package,forbidden", [("engine", "sct.analysis"), ("analysis", "sct.engine")])
def test_engine_and_analysis_import_neither_the_other(package, forbidden):
    bad = [f"{path.relative_to(ROOT)}:{line} imports {module}"
           for path in sorted((PACKAGE / package).rglob("*.py"))
           for line, module, names in imports(path)
           if module == forbidden or module.startswith(forbidden + ".")
           or (module == "sct" and forbidden.split(".")[1] in names)]
    assert not bad, "\n".join(bad)


def test_no_module_edits_sys_path():
    bad = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in SOURCES
           for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.Attribute) and node.attr == "path"
           and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    assert not bad, "sys.path used (import the installed package instead): " + ", ".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in SOURCES:
        own = module_name(path)
        for line, module, names in imports(path):
            if module.startswith("sct") and module != own:
                bad += [f"{path.relative_to(ROOT)}:{line}: {module}.{n}" for n in names if _private(n)]
                bad += [f"{path.relative_to(ROOT)}:{line}: {module}" for part in module.split(".") if _private(part)]
    assert not bad, "\n".join(bad)


def test_no_module_reaches_into_an_imported_modules_private_names():
    """``import sct.x as m`` / ``from sct import x``, then ``m._name``."""
    bad = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("sct")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sct"):
                aliases |= {a.asname or a.name for a in node.names}
        bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in aliases]
    assert not bad, "\n".join(bad)
