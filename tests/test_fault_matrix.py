"""docs/faults.md cannot rot: every row names a test that pytest really collects, and
every error row shows the one ``error:`` line users see."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "faults.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|")
NODE = re.compile(r"`(tests/[^`]+?\.py::[^`]+)`")


def rows() -> list[list[str]]:
    """The cells of each numbered table row of docs/faults.md."""
    out = []
    for line in DOC.read_text().splitlines():
        if ROW.match(line):
            out.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))])
    return out


def collected(files: set[str]) -> set[str]:
    """Node ids pytest collects from ``files``, one pytest run per test folder (each folder
    has its own conftest.py, which the tests import by name, so one run cannot collect
    them all), two runs at a time (mostly imports: the machine has two cores)."""
    by_folder = defaultdict(list)
    for f in sorted(files):
        by_folder[str(Path(f).parent)].append(f)
    groups = list(by_folder.values())
    ids: set[str] = set()
    for start in range(0, len(groups), 2):
        runs = [
            (group, subprocess.Popen(
                [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *group],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
            for group in groups[start : start + 2]
        ]
        for group, proc in runs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"pytest cannot collect {group}:\n{out[-3000:]}\n{err[-2000:]}"
            ids.update(line.strip() for line in out.splitlines() if "::" in line)
    return ids


def test_every_row_is_complete():
    table = rows()
    assert len(table) >= 25
    assert [int(r[0]) for r in table] == list(range(1, len(table) + 1)), "rows are numbered 1, 2, ... in order"
    for r in table:
        assert len(r) == 6, r  # number, fault, how, what you see, exit, test
        number, _, _, seen, exit_status, test = r
        code = re.match(r"\d+", exit_status)
        assert code, f"row {number}: no exit status in {exit_status!r}"
        if code.group() not in ("0", "137"):  # an error (137: kill -9, nothing can speak): its line
            # a stage's or the CLI's line, or (the library's API, e.g. dpap.attach) the exception's
            assert re.search(r"`` (error|[A-Z]\w*Error): [^\n]+ ``", seen), f"row {number}: no `` error: ... `` (or `` SomeError: ... ``) line in {seen!r}"
        assert len(NODE.findall(test)) == 1, f"row {number}: name one test as `tests/<file>.py::<test>`, not {test!r}"


def test_every_named_test_exists():
    named = {NODE.search(r[5]).group(1): r[0] for r in rows()}
    files = {n.split("::")[0] for n in named}
    missing_files = sorted(f for f in files if not (ROOT / f).is_file())
    assert not missing_files, f"docs/faults.md names test files that do not exist: {missing_files}"
    ids = collected(files)
    missing = []
    for node, number in named.items():
        found = node in ids if "[" in node else any(i == node or i.startswith(node + "[") for i in ids)
        if not found:
            missing.append(f"row {number}: {node}")
    assert not missing, "docs/faults.md names tests pytest does not collect:\n" + "\n".join(missing)
