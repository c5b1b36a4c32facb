"""Checks that a later install changed no version of what an earlier one installed.

    python .ci/same_versions.py BEFORE.txt AFTER.txt     # two `pip freeze` outputs

Prints ``same_versions: N packages of BEFORE.txt unchanged`` and exits 0, or prints every
package whose version changed or that was removed (``transformers 5.25.0 -> 5.3.0``) and
exits 1. Packages that only AFTER.txt holds are expected (the later install adds them).
"""

from __future__ import annotations

import sys
from pathlib import Path


def versions(path: Path) -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` lines of a ``pip freeze``."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep:
            found[name.strip().lower().replace("_", "-")] = version.strip()
    return found


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """One line per package of ``before`` whose version differs in ``after`` or is gone."""
    return [
        f"{name} {version} -> {after.get(name, 'removed')}"
        for name, version in sorted(before.items())
        if after.get(name) != version
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python .ci/same_versions.py BEFORE.txt AFTER.txt", file=sys.stderr)
        return 2
    before, after = versions(Path(argv[0])), versions(Path(argv[1]))
    changed = changes(before, after)
    if changed:
        print("\n".join(changed))
        print(
            f"same_versions: {len(changed)} package(s) of {argv[0]} changed by the later "
            "install: the README's set-up commands do not resolve one set of versions"
        )
        return 1
    print(f"same_versions: {len(before)} packages of {argv[0]} unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
