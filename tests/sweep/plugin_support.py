"""Install ``tests/plugin_dist`` into a folder, as an installer unpacks a wheel: module + ``.dist-info``.

pip cannot build the distribution here without network or the ``wheel`` package (setuptools
before 70.1 needs it), so the tests install it the way an installer lays a wheel out
(the binary distribution format: the modules, and a ``<name>-<version>.dist-info`` folder
with ``METADATA``, ``entry_points.txt`` and ``RECORD``), taking everything from the
distribution's own ``pyproject.toml``. Put the folder on ``PYTHONPATH`` and
``importlib.metadata`` finds the distribution and its entry points, in the driver and in
every worker process that inherits the environment.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "plugin_dist"


def install(target: Path, source: Path = SOURCE) -> Path:
    """Install the distribution in ``source`` into ``target``; return ``target``."""
    project = tomllib.loads((source / "pyproject.toml").read_text())
    meta, tool = project["project"], project["tool"]["setuptools"]
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for module in tool["py-modules"]:
        shutil.copy(source / f"{module}.py", target / f"{module}.py")
        files.append(f"{module}.py")
    name = meta["name"].replace("-", "_")
    info = target / f"{name}-{meta['version']}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\nSummary: {meta['description']}\n"
    )
    groups = meta.get("entry-points", {})
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items()) + "\n"
            for group, points in groups.items()
        )
    )
    (info / "INSTALLER").write_text("tomosweep-tests\n")
    files += [f"{info.name}/{f}" for f in ("METADATA", "entry_points.txt", "INSTALLER", "RECORD")]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    return target
