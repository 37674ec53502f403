"""The package's floors (docs/development.md), checked with import-linter's contracts in pyproject.toml:
a module imports only from its own floor or below, function-level imports included, and no two
modules import each other, even through others."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys\nfrom importlinter.cli import lint_imports\nsys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint(where: Path) -> subprocess.CompletedProcess:
    """lint-imports in `where` (its pyproject.toml, and its copy of the package first on the path)."""
    return subprocess.run([sys.executable, "-c", LINT], cwd=where, capture_output=True, text=True, timeout=240)


def test_every_module_keeps_to_its_floor_and_no_import_cycles():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line", [
    ("run/layout.py", "    from ..train import trainer\n"),  # the run directory reaching up to the engine, in a function
    ("run/recorder.py", "from ..tui import app\n"),  # a writer of the run directory importing a view
    ("core/events.py", "from ..run import files\n"),  # core reaching up to the run directory
])
def test_an_upward_import_fails_the_check(tmp_path, module, line):
    shutil.copytree(ROOT / "neurogen_tui", tmp_path / "neurogen_tui", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "neurogen_tui" / module
    text = path.read_text()
    if line.startswith(" "):
        text += "\n\ndef _reach_up():\n" + line
    else:
        text = text.replace("from __future__ import annotations\n", "from __future__ import annotations\n" + line, 1)
    path.write_text(text)
    result = lint(tmp_path)
    assert result.returncode != 0
    said = " ".join(result.stdout.split())  # import-linter wraps long contract names
    assert "floors: processes > views > services > engine > notifications > run directory > core BROKEN" in said, said
    assert f"neurogen_tui.{module[:-3].replace('/', '.')} ->" in result.stdout


def test_an_upward_import_inside_a_room_fails_its_contract(tmp_path):
    """The rooms keep an order of their own: the run directory's layout must not read runs back."""
    shutil.copytree(ROOT / "neurogen_tui", tmp_path / "neurogen_tui", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "neurogen_tui" / "run" / "layout.py"
    path.write_text(path.read_text() + "\n\ndef _reach_up():\n    from . import reader\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "run directory: readers and writers" in result.stdout and "BROKEN" in result.stdout, result.stdout
    assert "neurogen_tui.run.layout -> neurogen_tui.run.reader" in result.stdout


def test_the_command_line_imports_torch_textual_and_matplotlib_only_when_a_command_needs_them():
    """Function-level imports are there to put these off: `ls`, `--help` and the subcommands'
    parsers start without them."""
    probe = ("import sys, neurogen_tui.cli.entry, neurogen_tui.cli.commands\n"
             "print(sorted(m for m in ('torch', 'textual', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
