"""The README and docs/ against the code they describe: the demo's output, every setting and default,
every `make` target, every relative link and every code path they name.

Prose goes stale silently when code moves; each check here reads the truth from its source (the
demo script, `config.Settings`, the Makefile, the tree) rather than from a copy in this file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections import Counter
from pathlib import Path

import pytest

from config import SETTING_NAMES, Settings
from terminal.percentiles import SHOWN

REPO_ROOT = Path(__file__).resolve().parent.parent

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
DOC_FILES = [README, *DOCS]
DEMO_SCRIPT = REPO_ROOT / "tools" / "demo.sh"
MAKEFILE = REPO_ROOT / "Makefile"
README_MAX_LINES = 405
# Files the programs write, which a fresh checkout does not have.
GENERATED_PREFIXES = ("model/artifacts/", "model/registry/")
# How a settings table shows a default that is the empty string (a feature left off).
EMPTY_DEFAULT = "(empty)"

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def doc_id(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def code_texts(text: str) -> list[str]:
    """The fenced code blocks and the inline code spans of a Markdown text."""
    return [*FENCE.findall(text), *CODE_SPAN.findall(without_code_blocks(text))]


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under `heading`, as stripped cells."""
    section = text.split(f"\n{heading}\n", 1)[1]
    section = re.split(r"^#{1,6} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def only_code(cell: str) -> str:
    """The text of a cell that is exactly one code span."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"expected one code span, found {cell!r}"
    return match[1]


def default_of(cell: str) -> str:
    """A default cell's value: one code span, or EMPTY_DEFAULT for the empty string."""
    return "" if cell == EMPTY_DEFAULT else only_code(cell)


# -- the demo ---------------------------------------------------------------------------------


def shell_assignments(script: str) -> dict[str, list[str]]:
    """Every value each shell variable is assigned in `script`: a quoted string, `$(…)` or a bare word."""
    found: dict[str, list[str]] = {}
    pattern = r'(?:^|[\s;&|])([A-Za-z_]\w*)=("(?:[^"\\]|\\.)*"|\$\(.*\)|\S*)'
    for name, value in re.findall(pattern, script, flags=re.MULTILINE):
        found.setdefault(name, []).append(value)
    return found


def command_output_regex(command: str) -> str:
    """What a `$(…)` prints, as far as its last filter says: `wc -l` a count, `grep -o PATTERN` a match."""
    command = command.split("||", 1)[0].strip()
    if command.endswith("wc -l"):
        return r"\d+"
    patterns = re.findall(r"grep -oE '([^']*)'", command)
    return f"(?:{patterns[-1]})" if patterns else ".+?"


def expansion_regex(template: str, assignments: dict[str, list[str]], depth: int = 0) -> str:
    """A regex for the text a double-quoted shell string prints, with each variable replaced by what it may hold."""
    parts = re.split(r"\$\{?([A-Za-z_]\w*)\}?", template)
    regex = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.escape(part)
            continue
        alternatives = []
        for value in assignments.get(part, []):
            if depth < 5 and value.startswith('"'):
                alternatives.append(expansion_regex(value[1:-1], assignments, depth + 1))
            elif value.startswith("$("):
                alternatives.append(command_output_regex(value[2:-1]))
            else:
                alternatives.append(".+?")
        regex += f"(?:{'|'.join(alternatives) or '.+?'})"
    return regex


def demo_success_regex() -> re.Pattern[str]:
    """The demo's last line, `echo "demo OK: …"`, as a regex derived from the script itself."""
    script = DEMO_SCRIPT.read_text()
    [template] = re.findall(r'^\s*echo "(demo OK: .*)"\s*$', script, flags=re.MULTILINE)
    return re.compile(expansion_regex(template, shell_assignments(script)))


def test_the_regex_derived_from_the_demo_script_is_strict_enough():
    """The derivation keeps the script's words: a line with another wording does not pass."""
    regex = demo_success_regex()
    assert not regex.fullmatch("demo OK: everything went fine")
    assert not regex.fullmatch("demo OK: 10 valid events sent, 10 predictions received; latency after the event p50 1 ms")


def test_the_readme_shows_the_demo_line_as_the_script_prints_it():
    """The sample `demo OK:` line in the README has the form tools/demo.sh echoes, and its latency the consumer's format."""
    samples = [line for line in README.read_text().splitlines() if line.startswith("demo OK:")]
    assert samples, "README.md shows no `demo OK:` line"
    regex = demo_success_regex()
    latency = ", ".join(rf"{name} \d+ ms" for name, _ in SHOWN) + r", max \d+ ms"
    for sample in samples:
        assert regex.fullmatch(sample), f"{sample!r} is not what {doc_id(DEMO_SCRIPT)} prints ({regex.pattern})"
        assert re.search(rf"latency after the event {latency}$", sample), sample


def test_every_demo_variable_the_script_reads_is_documented():
    """Each DEMO_* variable tools/demo.sh reads is named in the README or docs/."""
    read = set(re.findall(r"\$\{?(DEMO_[A-Z0-9_]+)", DEMO_SCRIPT.read_text()))
    assert read, f"{doc_id(DEMO_SCRIPT)} reads no DEMO_* variable"
    documented = "\n".join(path.read_text() for path in DOC_FILES)
    assert {name for name in read if not re.search(rf"\b{name}\b", documented)} == set()


# -- settings ---------------------------------------------------------------------------------


def documented_defaults(path: Path, heading: str) -> dict[str, str]:
    """`NAME: default` from the rows of a settings table whose first cell is one setting."""
    rows = table_rows(path.read_text(), heading)
    names = [only_code(row[0]) for row in rows if re.fullmatch(r"`[A-Z0-9_]+`", row[0])]
    duplicated = [name for name, count in Counter(names).items() if count > 1]
    assert not duplicated, f"{doc_id(path)} lists {duplicated} more than once"
    return {only_code(row[0]): default_of(row[1]) for row in rows if only_code(row[0]) in SETTING_NAMES}


def assert_defaults_match(documented: dict[str, str], where: str) -> None:
    # Each documented default goes through the setting's own parser, as config.load_settings would
    # take it from the environment, and must give the default config.Settings holds.
    for field in dataclasses.fields(Settings):
        variable = field.metadata["env"]
        if variable in documented:
            parsed = field.metadata["parse"](variable, documented[variable])
            assert parsed == field.default, f"{where}: {variable} is documented as {documented[variable]!r}, default {field.default!r}"


def test_the_configuration_page_lists_exactly_the_settings_with_their_defaults():
    """docs/configuration.md has one row per field of config.Settings, no other, each with its default."""
    path = REPO_ROOT / "docs" / "configuration.md"
    rows = table_rows(path.read_text(), "## Every setting")
    names = [only_code(row[0]) for row in rows]
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) == SETTING_NAMES
    assert_defaults_match(documented_defaults(path, "## Every setting"), doc_id(path))


def test_the_readme_settings_agree_with_config():
    """The README's short table names only settings, each with its default."""
    rows = table_rows(README.read_text(), "## Common settings")
    names = {only_code(row[0]) for row in rows}
    assert names and names <= SETTING_NAMES, names - SETTING_NAMES
    assert_defaults_match(documented_defaults(README, "## Common settings"), "README.md")


# -- make targets, links and paths ------------------------------------------------------------


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9][\w-]*)\s*:(?!=)", MAKEFILE.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_every_make_target_named_exists(path: Path):
    """`make X` in a code span or block of the README or docs/ is a target of the Makefile."""
    named = {match for code in code_texts(path.read_text()) for match in re.findall(r"(?<![\w/.-])make ([a-z][\w-]*)", code)}
    assert named - makefile_targets() == set()


def github_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text (a repeated heading gets -1, -2, …)."""
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in HEADING.findall(without_code_blocks(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return anchors


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_every_relative_link_points_at_something_that_exists(path: Path):
    """Each relative link of the README and docs/ names an existing file or folder, and a heading where it has an anchor."""
    broken = []
    for target in LINK.findall(without_code_blocks(path.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file or folder")
        elif anchor and linked.suffix == ".md" and anchor not in github_anchors(linked.read_text()):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def project_top_level() -> set[str]:
    return {entry.name for entry in REPO_ROOT.iterdir() if not entry.name.startswith((".", "__"))}


def runs_as_module(module: str) -> bool:
    """`python -m module` from the project folder finds a project file, or an installed package (pytest)."""
    base = REPO_ROOT / module.replace(".", "/")
    if base.with_suffix(".py").is_file() or (base / "__main__.py").is_file():
        return True
    top = module.split(".")[0]
    return top not in project_top_level() and importlib.util.find_spec(top) is not None


@pytest.mark.parametrize("path", DOC_FILES, ids=doc_id)
def test_every_code_path_and_module_named_exists(path: Path):
    """A path in a code span (`service/delivery/`, `stack/*.sh`) exists, and each `python -m` module can run.

    Paths starting with a dot (`.stack/`, `.venv/`) are the programs' own state, made at run time."""
    text = path.read_text()
    missing = []
    for span in CODE_SPAN.findall(without_code_blocks(text)):
        if not re.fullmatch(r"[\w*-][\w.*-]*(/[\w.*-]*)+", span):
            continue
        if span.startswith(GENERATED_PREFIXES):
            continue
        if not (list(REPO_ROOT.glob(span)) if "*" in span else (REPO_ROOT / span).exists()):
            missing.append(span)
    for code in code_texts(text):
        for module in re.findall(r"python -m ([\w.]+)", code):
            if not runs_as_module(module):
                missing.append(f"python -m {module}")
    assert missing == []


def test_the_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"
