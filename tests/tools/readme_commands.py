"""The README's command blocks, read as a user would copy them: ``bash`` fences, continuation lines joined."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section_commands(heading: str) -> list[list[str]]:
    """The commands of every ```bash block under ``## <heading>`` (up to the next ``## ``), split as a shell would."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                commands.append(shlex.split(line))
    return commands
