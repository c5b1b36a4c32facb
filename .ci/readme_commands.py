"""Prints the README's set-up commands, one per line, so CI runs exactly what a new user runs.

    python .ci/readme_commands.py            # the commands of the first ```bash block under
                                             # the README heading that starts "## Set-up"

Comment lines and blank lines of the block are left out. Exits 1, naming what it found, when
the README has no such section or its block does not hold exactly two commands.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Set-up"
EXPECTED = 2


def setup_commands(text: str) -> list[str]:
    """The command lines of the first ```bash block under the ``## Set-up`` heading.

    Raises:
      ValueError: naming what is missing when there is no such heading or block.
    """
    start = next(
        (m.end() for m in re.finditer(r"^## .*$", text, re.M) if m.group().startswith(HEADING)),
        None,
    )
    if start is None:
        raise ValueError(f"README.md has no heading starting {HEADING!r}")
    section = text[start:].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, re.M | re.S)
    if block is None:
        raise ValueError(f"README.md's {HEADING!r} section has no ```bash block")
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def main() -> int:
    try:
        commands = setup_commands(README.read_text(encoding="utf-8"))
    except ValueError as error:
        print(f"readme_commands: {error}", file=sys.stderr)
        return 1
    if len(commands) != EXPECTED:
        print(
            f"readme_commands: expected {EXPECTED} set-up commands in README.md, found "
            f"{len(commands)}: {commands}",
            file=sys.stderr,
        )
        return 1
    print("\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
