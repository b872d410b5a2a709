"""The README and docs/ stay true to the code. Every docs/ page is linked from the README, every
link lands on a file and heading that exist (bench/RESULTS.md's sections included), and every
command line they show names a real command or bench script and flags it takes, so a reader
who copies a line never meets `unrecognized arguments`."""

import importlib
import re
import shlex

import pytest

from catsdogs import cli

from conftest import REPO

README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]
# the pages the README promises, by task
TASK_PAGES = {"training.md", "using-a-model.md", "smaller-models.md", "serving.md",
              "several-machines.md", "trust.md", "errors.md", "layout.md"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path):
    """GitHub's anchors for a Markdown file's headings (lower case, punctuation dropped, spaces
    to hyphens); lines inside fenced code are not headings."""
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def shell_lines(path):
    """The command lines of a page's ```bash blocks: continuation lines joined, comments cut."""
    lines, block = [], None
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
        elif block == "bash" and line.strip():
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line)
    return lines


def problems(line):
    """What is wrong with one documented command line: a command, bench script or flag that does
    not exist. Lines that run other programs (pip, curl) are not checked."""
    argv = shlex.split(line, comments=True)
    while argv and re.match(r"[A-Z_]+=", argv[0]):  # VAR=value before the command
        argv = argv[1:]
    if argv[:2] == ["python", "-m"] and argv[2].split(".")[0] == "catsdogs":
        argv = ["catsdogs", *argv[2].split(".")[1:], *argv[3:]]
    if argv[:1] == ["catsdogs"]:
        if len(argv) > 1 and not argv[1].startswith("-"):
            command, rest = argv[1], argv[2:]
            if command not in cli.COMMANDS:
                return [f"no command {command!r}"]
            known = importlib.import_module(f"catsdogs.commands.{command}").build_parser()
            known = set(FLAG.findall(known.format_help()))
        else:
            rest, known = argv[1:], set(FLAG.findall(cli.usage()))
        return [flag for flag in FLAG.findall(" ".join(rest)) if flag not in known]
    if argv[:1] == ["python"] and argv[1].startswith("bench/"):
        script = REPO / argv[1]
        if not script.is_file():
            return [f"no script {argv[1]}"]
        source = script.read_text()
        return [flag for flag in FLAG.findall(" ".join(argv[2:])) if f'"{flag}"' not in source]
    return []


COMMAND_LINES = [(path.relative_to(REPO).as_posix(), line)
                 for path in DOCUMENTS for line in shell_lines(path)]


def test_readme_is_a_first_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert "python -m catsdogs.train" in text
    assert "pip install -r requirements-dev.txt && python -m pytest" in text  # CI runs it


def test_every_docs_page_is_linked_from_the_readme():
    linked = {link.split("#")[0] for link in LINK.findall(README.read_text())}
    assert TASK_PAGES <= {page.name for page in PAGES}
    assert [page.name for page in PAGES if f"docs/{page.name}" not in linked] == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_land_on_a_file_and_a_heading(path):
    broken = []
    for link in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists() or (anchor and anchor not in anchors(file)):
            broken.append(link)
    assert broken == []


@pytest.mark.parametrize("page, line", COMMAND_LINES)
def test_documented_command_exists_with_its_flags(page, line):
    assert problems(line) == []


def test_the_pages_show_commands_and_the_check_sees_mistakes():
    """The check above reads real lines, and a made-up command, flag or script fails it."""
    shown = {line.split()[2] for _, line in COMMAND_LINES if line.startswith("python -m ")}
    assert {"catsdogs.train", "catsdogs.predict", "catsdogs.serve", "catsdogs.prune"} <= shown
    assert problems("python -m catsdogs.train --data x --no-such-flag") == ["--no-such-flag"]
    assert problems("catsdogs trian --data x") == ["no command 'trian'"]
    assert problems("catsdogs --versoin") == ["--versoin"]
    assert problems("python bench/nothing.py") == ["no script bench/nothing.py"]
    assert problems("python bench/compress.py --no-such-flag") == ["--no-such-flag"]
    assert "#no-such-heading" not in anchors(README) and "python-api" in anchors(README)
