"""The wheel carries everything the server needs at run time, not only its Python modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from distribute.embed import BUILD_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_template_static_file_and_the_built_harness(tmp_path: Path) -> None:
    # Built from a copy of the tracked files (plus the harness build), so no stale build/ folder
    # of an earlier build can supply what the package data would miss.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    built = [path.relative_to(ROOT).as_posix() for path in BUILD_DIR.rglob("*") if path.is_file()]
    source = tmp_path / "source"
    for name in [*tracked.split(), *built]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    data_files = [name for name in tracked.split() if name.startswith("distribute/") and not name.endswith(".py")]
    assert any(name.startswith("distribute/console/templates/") for name in data_files)
    assert [name for name in data_files if name not in packed] == []
    assert (BUILD_DIR.relative_to(ROOT) / "runner.js").as_posix() in packed
