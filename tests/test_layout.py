"""The package's shape: stages whose imports point one way, one `catsdogs` command, plain API
functions, so a reader finds each module where its stage says and nothing imports upward."""

import ast
import inspect
import shutil
import subprocess
import sys

import pytest

import catsdogs
from catsdogs import cli

from conftest import REPO

PACKAGE = REPO / "catsdogs"
# Lowest first: a module may import its own stage and the stages before it, never one after.
STAGES = ["base", "data", "models", "inference", "training", "serve", "top"]
BASE_MODULES = {"catsdogs.config", "catsdogs.runs", "catsdogs.errors", "catsdogs.plots",
                "catsdogs.console", "catsdogs.backends", "catsdogs.stderr_filter"}


def module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def stage_of(module):
    if module in BASE_MODULES:
        return "base"
    if module.endswith(".__main__"):  # a `python -m` entry point belongs to the command line
        return "top"
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in STAGES:
        return parts[1]
    if len(parts) == 2 and parts[1] in STAGES:  # a stage package's own __init__
        return parts[1]
    return "top"  # catsdogs/__init__, cli, __main__, the python -m shims, commands/


def imports_of(module):
    """The catsdogs modules `module` imports anywhere in its file (lazy imports count: a
    function-level import is as much a dependency as a top-level one)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("catsdogs")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("catsdogs"):
            for alias in node.names:  # `from catsdogs.data import augment` names a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found - {module}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_import_names_a_module_that_exists():
    missing = {(m, i) for m, imported in GRAPH.items() for i in imported if i not in MODULES}
    assert not missing


def upward_imports(graph):
    return [(module, imported) for module, imported_set in graph.items()
            for imported in imported_set
            if STAGES.index(stage_of(imported)) > STAGES.index(stage_of(module))]


def find_cycles(graph):
    """Every cycle a depth-first walk meets, as [a, b, ..., a]."""
    visiting, done, cycles = [], set(), []

    def visit(module):
        if module in visiting:
            cycles.append(visiting[visiting.index(module):] + [module])
        elif module not in done:
            visiting.append(module)
            for imported in sorted(graph.get(module, ())):
                visit(imported)
            visiting.pop()
            done.add(module)

    for module in sorted(graph):
        visit(module)
    return cycles


def test_imports_point_down_the_stage_order():
    assert not upward_imports(GRAPH), "imports pointing up the stage order"


def test_no_import_cycles():
    assert not find_cycles(GRAPH)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The two checks above can fail: on a made-up graph they do."""
    graph = {"catsdogs.data.images": {"catsdogs.training.train"},
             "catsdogs.training.train": {"catsdogs.inference.predict"},
             "catsdogs.inference.predict": {"catsdogs.inference.classifier"},
             "catsdogs.inference.classifier": {"catsdogs.inference.predict"}}
    assert upward_imports(graph) == [("catsdogs.data.images", "catsdogs.training.train")]
    assert ["catsdogs.inference.classifier", "catsdogs.inference.predict",
            "catsdogs.inference.classifier"] in find_cycles(graph) or [
        "catsdogs.inference.predict", "catsdogs.inference.classifier",
        "catsdogs.inference.predict"] in find_cycles(graph)


def test_no_module_swaps_its_class():
    for path in MODULES.values():
        text = path.read_text()
        assert "make_callable" not in text and "__class__ =" not in text, path


def test_api_is_plain_functions():
    for name in ("train", "resume", "load", "evaluate", "export"):
        assert inspect.isfunction(getattr(catsdogs, name)), name


@pytest.mark.parametrize("command", [c for c in cli.COMMANDS if (PACKAGE / f"{c}.py").exists()])
def test_python_dash_m_shim_refuses_to_be_imported(command):
    """Importing catsdogs/train.py would shadow catsdogs.train (the function) with the module."""
    with pytest.raises(ImportError, match=f"catsdogs.commands.{command}"):
        __import__(f"catsdogs.{command}")
    assert not inspect.ismodule(getattr(catsdogs, command, None))


def _run(argv):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=60)


def test_catsdogs_train_help_equals_python_dash_m_train_help():
    via_cli, via_shim = _run(["-m", "catsdogs", "train", "--help"]), _run(["-m", "catsdogs.train", "--help"])
    assert via_cli.returncode == via_shim.returncode == 0
    assert via_cli.stdout == via_shim.stdout and "usage: catsdogs train" in via_cli.stdout


@pytest.mark.skipif(shutil.which("catsdogs") is None,
                    reason="the package is not installed (pip install -e .), so no console script")
def test_console_script_is_the_same_command():
    installed = subprocess.run(["catsdogs", "train", "--help"], capture_output=True, text=True,
                               timeout=60)
    assert installed.stdout == _run(["-m", "catsdogs.train", "--help"]).stdout


def test_top_level_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        line = next(line for line in out.splitlines() if line.strip().startswith(command + " "))
        assert len(line.split(None, 1)[1]) > 10
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"catsdogs {catsdogs.__version__}"


def test_unknown_command_is_one_line_with_a_suggestion(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'train'" in err[0]


def test_pyproject_declares_the_console_script():
    text = (REPO / "pyproject.toml").read_text()
    assert 'catsdogs = "catsdogs.cli:main"' in text


def test_layout_page_lists_every_module():
    layout = (REPO / "docs" / "layout.md").read_text()
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        assert path.relative_to(PACKAGE).as_posix() in layout, module


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_runs_as_python_dash_m(command):
    """catsdogs/<name>.py shims, and serve/__main__.py for the serve package."""
    assert (PACKAGE / f"{command}.py").exists() or (PACKAGE / command / "__main__.py").exists()
    result = _run(["-m", f"catsdogs.{command}", "--help"])
    assert result.returncode == 0 and f"usage: catsdogs {command}" in result.stdout
