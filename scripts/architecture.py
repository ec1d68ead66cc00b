#!/usr/bin/env python3
"""Writes (or, with --check, verifies) the "File by file" section of docs/ARCHITECTURE.md:
one table per crate, one row per source file under <crate>/src, each described by the first
sentence of its module doc (`//!`). Run it after adding, moving or re-documenting a file;
scripts/test.sh runs it with --check so the map never drifts from the tree."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
START = "### File by file\n"
END = "## Request flows\n"


def first_sentence(path):
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("//!"):
            if lines or line.strip():
                break
            continue
        text = line[3:].strip()
        if not text:
            if lines:
                break
            continue
        lines.append(text)
    if not lines:
        sys.exit(f"architecture.py: {path.relative_to(ROOT)} has no module doc (//!)")
    para = " ".join(lines)
    # The first sentence: up to a full stop followed by a space and a capital or a code span.
    m = re.search(r"(?<!e\.g)(?<!i\.e)\.(?=\s+[A-Z`\[(])", para)
    sentence = para[: m.end()] if m else para
    return sentence.replace("|", "\\|")


def section():
    out = [START, "\n", "Each file's module doc, first sentence (tests under `*/tests/` and "
           "`e2e/tests/` are left out). `python3 scripts/architecture.py` writes this section.\n"]
    crates = sorted(p.parent for p in ROOT.glob("*/Cargo.toml"))
    for crate in crates:
        files = sorted((crate / "src").rglob("*.rs"))
        if not files:
            continue
        out += [f"\n#### `{crate.name}`\n", "\n", "| file | what it is |\n", "|---|---|\n"]
        for f in files:
            rel = f.relative_to(crate)
            out.append(f"| `{rel}` | {first_sentence(f)} |\n")
    out.append("\n")
    return "".join(out)


def main():
    text = DOC.read_text()
    a, b = text.index(START), text.index(END)
    new = text[:a] + section() + text[b:]
    if "--check" in sys.argv:
        if new != text:
            sys.exit("docs/ARCHITECTURE.md's file-by-file section is out of date: "
                     "run python3 scripts/architecture.py and commit the result")
        return
    DOC.write_text(new)


main()
