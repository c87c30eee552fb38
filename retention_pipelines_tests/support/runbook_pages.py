"""The runbooks as GitHub shows them: each page's sections by anchor and its links, and what is
missing: a check or a queue reason without its section, a link that leads nowhere."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

# Tables are GitHub's, not CommonMark's: without them a link in a table cell is not seen.
PARSER = MarkdownIt("commonmark").enable("table")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


@dataclass(frozen=True)
class Page:
    path: Path
    sections: dict[str, str]  # anchor → the section's text, its heading to the next one of its level or higher
    links: tuple[str, ...]  # every link's target as written


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def read_page(path: Path) -> Page:
    lines = path.read_text().splitlines()
    tokens = PARSER.parse("\n".join(lines))
    headings = [(int(token.tag[1]), token.map[0], tokens[i + 1]) for i, token in enumerate(tokens)
                if token.type == "heading_open"]
    sections: dict[str, str] = {}
    repeats: Counter[str] = Counter()
    for n, (level, start, inline) in enumerate(headings):
        end = next((line for lvl, line, _ in headings[n + 1:] if lvl <= level), len(lines))
        name = anchor("".join(child.content for child in inline.children or []))
        # GitHub tells a repeated heading apart by a suffix: foo, foo-1, foo-2…
        sections[f"{name}-{repeats[name]}" if repeats[name] else name] = "\n".join(lines[start:end])
        repeats[name] += 1
    links = tuple(child.attrGet("href") for token in tokens if token.type == "inline"
                  for child in token.children or [] if child.type == "link_open")
    return Page(path, sections, links)


def section(path: Path, fragment: str | None) -> str | None:
    """The text a link to `path#fragment` leads to (the whole page without a fragment); None where
    the page or the section is not there."""
    if not path.is_file():
        return None
    if not fragment:
        return path.read_text()
    return read_page(path).sections.get(fragment)


def link_problem(page: Path, target: str) -> str | None:
    """Why a link of `page` leads nowhere, or None: its file missing, or no heading of its anchor."""
    if SCHEME.match(target):
        return None  # the web: not this repository's to check
    file, _, fragment = target.partition("#")
    destination = (page.parent / file).resolve() if file else page
    if not destination.exists():
        return f"link {target} leads to no file"
    if fragment and destination.suffix == ".md" and section(destination, fragment) is None:
        return f"link {target} leads to no heading of {destination.name}"
    return None


def runbook_problem(root: Path, subject: str, runbook: str | None, names: str) -> str | None:
    """Why `subject` has no runbook section, or None. `runbook` is its link from the repository's
    root (docs/runbooks/page.md#anchor); the page, or the anchored section, must name `names`."""
    if not runbook:
        return f"{subject}: no runbook"
    file, _, fragment = runbook.partition("#")
    text = section(root / file, fragment or None)
    if text is None:
        return f"{subject}: its runbook {runbook} is not there"
    if names not in text:
        return f"{subject}: its runbook {runbook} does not name {names}"
    return None
