"""MkDocs hook: the pages generated when the site is built, and one fix-up of every page.

- `reference.md`, the configuration reference, from the config models (`gateway.config.reference`,
  the same source as `gateway schema`), so that it cannot drift from the code;
- `changelog.md`, from the top-level `CHANGELOG.md` (its `docs/` links made relative to the site);
- in table rows, `\\|` inside a code span becomes `|`: GitHub needs the escape there to keep the
  table, Python-Markdown keeps pipes in code spans as they are and would show the backslash.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
# The models of this checkout, not those of whatever copy of the package is installed.
sys.path.insert(0, str(ROOT))

from gateway.config.reference import Reference  # noqa: E402


def on_files(files: Files, config: Any) -> Files:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").replace("](docs/", "](")
    for name, content in (("reference.md", Reference().markdown()), ("changelog.md", changelog)):
        files.append(File.generated(config, name, content=content))
    return files


_CODE_SPAN = re.compile(r"`[^`\n]*`")


def on_page_markdown(markdown: str, **_: Any) -> str:
    return "\n".join(
        _CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)
        if line.startswith("|")
        else line
        for line in markdown.split("\n")
    )
