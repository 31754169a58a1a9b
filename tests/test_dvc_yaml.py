"""dvc.yaml lists, for every stage, its script and every src/ladeda file the script imports (transitively)."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_files(script: Path) -> set[str]:
    """Project files `script` imports: ladeda modules (with their parent packages) and stages/ helpers."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if (script.parent / f"{name}.py").is_file():  # a helper beside the stage script
                    todo.append(script.parent / f"{name}.py")
                if not name.startswith("ladeda"):
                    continue
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    f = module_file(".".join(parts[:i]))
                    if f is not None:
                        todo.append(f)
    return {str(p.relative_to(ROOT)) for p in seen}


def stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_cover_every_imported_project_file(name):
    stage = stages()[name]
    script = ROOT / "stages" / f"{name}.py"
    assert f"stages/{name}.py" in stage["cmd"]
    deps = {d for d in stage.get("deps", []) if not d.startswith("${")}
    code_dirs = {d for d in deps if d.startswith("src/") and (ROOT / d).is_dir()}
    listed = {d for d in deps if d.endswith(".py")}
    listed |= {str(f.relative_to(ROOT)) for d in code_dirs for f in (ROOT / d).rglob("*.py")}
    needed = imported_files(script)
    assert needed - listed == set(), f"{name}: add these deps"
    assert listed - needed == set(), f"{name}: these deps are not imported (a dir dep must be imported whole)"
