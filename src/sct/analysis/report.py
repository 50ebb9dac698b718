"""Writing measured results into Markdown docs, one marked section per benchmark."""

from __future__ import annotations

import os
from pathlib import Path


def _markers(key: str) -> tuple[str, str]:
    return f"<!-- sct-bench:{key}:start -->", f"<!-- sct-bench:{key}:end -->"


def update_doc_section(path: str | os.PathLike, key: str, markdown: str, title: str | None = None) -> None:
    """Replace the section ``key`` of the Markdown file ``path`` with ``markdown`` (append if absent).

    Sections are delimited by HTML comments, so several benchmarks can share one document and each
    rerun replaces only its own numbers. ``title`` (a heading) is written above a new section.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    start, end = _markers(key)
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        heading = f"## {title}\n\n" if title else ""
        text = text.rstrip() + ("\n\n" if text.strip() else "") + heading + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub Markdown table; floats are written as given (format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
