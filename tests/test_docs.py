"""The docs cannot drift from the flags: every `neurogen-tui ...` command line quoted in README.md and
docs/*.md parses with today's parsers (as far as `--help` would: flags, choices, values), and every
docs page the README links to exists."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from neurogen_tui.cli.entry import build_parser
from neurogen_tui.cli.parsers import PARSERS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~)")
SPAN = re.compile(r"`(neurogen-tui [^`]+)`")
IN_BLOCK = re.compile(r"^(?:\S*/)?(neurogen-tui( .*)?)$")  # `.venv/bin/neurogen-tui ...` too


def quoted_commands(page: Path) -> list[tuple[int, str]]:
    """(line number, command) for each `neurogen-tui ...` line in a code block (fenced or indented)
    and each inline code span that starts with `neurogen-tui `."""
    found, fenced = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        in_block = fenced or line.startswith("    ")
        if in_block:  # each command of a `a && b` line
            found.extend((number, m.group(1)) for part in line.split("&&") if (m := IN_BLOCK.match(part.strip())))
        else:
            found.extend((number, span) for span in SPAN.findall(line))
    return found


def words(command: str) -> list[str]:
    """The command's arguments: a trailing `# comment` and `...` (more flags) left out."""
    return [w for w in shlex.split(command, comments=True)[1:] if w != "..."]


CASES = [(page, number, command) for page in PAGES for number, command in quoted_commands(page)]


def test_the_docs_quote_commands_at_all():
    assert len(CASES) >= 30  # a broken extractor must not pass by finding nothing
    assert {page.name for page, _, _ in CASES} >= {"README.md", "cockpit.md", "training.md", "exports.md"}


@pytest.mark.parametrize("page, number, command", CASES,
                         ids=[f"{page.name}:{number}" for page, number, _ in CASES])
def test_each_quoted_command_line_parses(page, number, command, capsys):
    argv = words(command)
    parser = PARSERS[argv[0]]() if argv and argv[0] in PARSERS else build_parser()
    rest = argv[1:] if argv and argv[0] in PARSERS else argv
    try:
        parser.parse_args(rest)
    except SystemExit as exc:
        assert exc.code == 0, f"{page.name}:{number}: `{command}` does not parse: {capsys.readouterr().err.strip()}"


def test_a_command_with_a_flag_that_does_not_exist_fails_the_check(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("```bash\nneurogen-tui watch runs/a --no-such-flag\n```\n")
    [(number, command)] = quoted_commands(page)
    argv = words(command)
    with pytest.raises(SystemExit) as exc:
        PARSERS[argv[0]]().parse_args(argv[1:])
    assert exc.value.code == 2 and "--no-such-flag" in capsys.readouterr().err


def test_every_docs_page_the_readme_links_to_exists():
    links = re.findall(r"\]\((docs/[^)#]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert links, "README links to no docs page"
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, missing
