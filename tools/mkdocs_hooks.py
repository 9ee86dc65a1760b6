"""mkdocs hooks: the site's home page is the repository's README.md, so the two cannot drift.

README.md links to pages as ``docs/<page>.md`` (right on a code host); on the site the pages sit at
the root, so those links lose their ``docs/`` prefix here.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def on_page_read_source(page, config):
    if page.file.src_uri != "index.md":
        return None  # mkdocs reads the file itself
    return re.sub(r"\]\(docs/", "](", README.read_text(encoding="utf-8"))
