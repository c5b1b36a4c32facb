"""The README's two set-up commands resolve one set of versions, and CI runs exactly them.

``pip install -e .`` (command 1) resolves the newest versions that ``install_requires``
admits; ``pip install -e ".[test]"`` (command 2) then moves any of them that a test extra
caps lower, and leaves behind what the newer release brought (transformers 5.25's
``kernels`` broke every model build under 5.3). So no version that ``install_requires`` admits
for a package may lie above a cap that a [test] dependency puts on it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".ci"))
import readme_commands  # noqa: E402
import same_versions  # noqa: E402


def setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """``install_requires`` and ``extras_require`` read from setup.py's literals."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "setup"
    )
    found = {
        k.arg: ast.literal_eval(k.value)
        for k in call.keywords
        if k.arg in ("install_requires", "extras_require")
    }
    return found["install_requires"], found["extras_require"]


def caps_above(ours: SpecifierSet, theirs: SpecifierSet) -> list[str]:
    """The upper bounds of ``theirs`` that ``ours`` lets a newer version past."""
    probes = [Version("9999")] if any(s.operator in ("<", "<=") for s in theirs) else []
    for spec in theirs:
        if spec.operator == "<":
            probes.append(Version(spec.version))
        elif spec.operator == "<=":
            probes.append(Version(spec.version + ".post9999"))
    return [str(v) for v in probes if ours.contains(v, prereleases=False)]


def installed_requirements(name: str, extras: set[str]) -> list[Requirement]:
    """What the installed ``name`` requires with ``extras`` (empty when not installed)."""
    try:
        requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for dep in map(Requirement, requires):
        if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras or {""}):
            found.append(dep)
    return found


def base_specifiers(install: list[str]) -> dict[str, SpecifierSet]:
    """Each base requirement's specifier, narrowed by what the other installed base
    requirements ask of it (transformers 5.3 caps huggingface-hub below 2.0, say)."""
    reqs = [Requirement(r) for r in install]
    specs = {canonicalize_name(r.name): r.specifier for r in reqs}
    for req in reqs:
        for dep in installed_requirements(req.name, set()):
            name = canonicalize_name(dep.name)
            if name in specs:
                specs[name] = specs[name] & dep.specifier
    return specs


def test_no_test_dependency_caps_a_base_requirement_below_what_it_admits():
    install, extras = setup_requirements()
    ours = base_specifiers(install)
    checked, problems = 0, []
    for text in extras["test"]:
        owner = Requirement(text)
        for dep in installed_requirements(owner.name, owner.extras):
            name = canonicalize_name(dep.name)
            if name in ours:
                checked += 1
                above = caps_above(ours[name], dep.specifier)
                if above:
                    problems.append(f"{text} needs {dep}; install_requires admits {above}")
    if not checked:
        pytest.skip("no [test] dependency is installed: nothing to compare")
    assert not problems, problems


def test_readme_has_the_two_setup_commands_ci_runs():
    commands = readme_commands.setup_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2, commands
    first, second = commands
    assert first.startswith("pip install -e . ") and "python -m embres.train" in first
    assert second.startswith('pip install -e ".[test]"') and "python -m pytest" in second
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "python .ci/readme_commands.py" in ci
    # each README command appears in .ci/run as a line of its own, run as written
    lines = [line.strip() for line in ci.splitlines()]
    assert first in lines and second in lines
    out = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "readme_commands.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == commands


def test_same_versions_names_what_the_second_install_moved(tmp_path):
    before, after = tmp_path / "1.txt", tmp_path / "2.txt"
    before.write_text("kernels==0.19.1\ntransformers==5.25.0\nnumpy==2.4.6\n")
    after.write_text("kernels==0.19.1\ntransformers==5.3.0\nnumpy==2.4.6\ntorch==2.13.0\n")
    assert same_versions.main([str(before), str(after)]) == 1
    assert same_versions.changes(same_versions.versions(before), same_versions.versions(after)) == [
        "transformers 5.25.0 -> 5.3.0"
    ]
    assert same_versions.main([str(before), str(before)]) == 0
