"""dvc.yaml declares, for every stage, exactly the code it imports (at folder level) and the outputs it writes."""

import ast
from pathlib import Path

import pytest
import yaml

from ladeda.core.outputs import TIMINGS_DIR, metrics_path, plots_dir, timings_path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "ladeda"


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def runtime_imports(tree: ast.AST):
    """Import nodes that run when the module runs (not those under `if TYPE_CHECKING:`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def imported_files(script: Path) -> set[Path]:
    """Project files `script` imports at run time, transitively: ladeda modules (with parent packages), stage helpers."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                names = []
            for name in names:
                if (script.parent / f"{name}.py").is_file():  # a helper beside the stage script
                    todo.append(script.parent / f"{name}.py")
                if name.split(".")[0] != "ladeda":
                    continue
                parts = name.split(".")
                todo += [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i])))]
    return seen


def as_deps(files: set[Path]) -> set[str]:
    """The dvc.yaml deps that cover `files`: a subpackage folder for its modules, else the file itself."""
    deps = set()
    for f in files:
        rel = f.relative_to(PACKAGE) if f.is_relative_to(PACKAGE) else None
        target = PACKAGE / rel.parts[0] if rel is not None and len(rel.parts) > 1 else f
        deps.add(str(target.relative_to(ROOT)))
    return deps


def stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def names(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


@pytest.mark.parametrize("name", list(stages()))
def test_stage_code_deps_are_exactly_what_it_imports(name):
    stage = stages()[name]
    script = ROOT / "stages" / f"{name}.py"
    assert stage["cmd"] == f"python stages/{name}.py"
    listed = {d for d in stage["deps"] if d.startswith(("src/", "stages/"))}
    needed = as_deps(imported_files(script))
    assert needed - listed == set(), f"{name}: add these deps"
    assert listed - needed == set(), f"{name}: these deps are not imported"


@pytest.mark.parametrize("name", list(stages()))
def test_stages_that_skip_unreadable_files_depend_on_the_data_check(name):
    """`checked_loader` reads metrics/check_data.json, so a new data check must rerun the stage."""
    uses = PACKAGE / "pipeline" / "datasets.py" in imported_files(ROOT / "stages" / f"{name}.py")
    assert uses == ("metrics/check_data.json" in stages()[name]["deps"])


def test_folder_deps_are_the_subpackages():
    """A dep folder is a whole subpackage, so a module added to it is covered without editing dvc.yaml."""
    folders = {d for s in stages().values() for d in s["deps"] if d.startswith("src/") and not d.endswith(".py")}
    assert folders and all((ROOT / d / "__init__.py").is_file() and (ROOT / d).parent == PACKAGE for d in folders)


def test_type_checking_imports_are_not_deps(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from typing import TYPE_CHECKING\nfrom ladeda.core.errors import run_cli\n"
                      "if TYPE_CHECKING:\n    from ladeda.models import LaDeDa9\n")
    files = imported_files(script) - {script}
    assert as_deps(files) == {"src/ladeda/__init__.py", "src/ladeda/core"}


@pytest.mark.parametrize("name", list(stages()))
def test_stage_outputs_follow_the_metrics_and_plots_convention(name):
    stage = stages()[name]
    metrics = names(stage.get("metrics"))
    assert str(metrics_path(name)) in metrics
    assert metrics == {str(metrics_path(name))}
    timings = {o for o in names(stage.get("outs")) if o.startswith(str(TIMINGS_DIR))}
    writes_timings = f'write_timings("{name}"' in (ROOT / "stages" / f"{name}.py").read_text()
    assert timings == ({str(timings_path(name))} if writes_timings else set())
    plot_dirs = {o for o in names(stage.get("outs")) if o.startswith("plots/") and "." not in Path(o).name}
    assert plot_dirs <= {str(plots_dir(name))}


def test_checkpoint_outputs_come_from_params_paths():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    outs = {o for s in stages().values() for o in names(s.get("outs")) if o.startswith("${")}
    assert outs == {"${paths.pretrained}", "${paths.finetuned}", "${paths.student_best}", "${paths.student_final}"}
    for out in outs:
        assert out[len("${paths."):-1] in params["paths"]


def test_file_stays_readable():
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) <= 150
