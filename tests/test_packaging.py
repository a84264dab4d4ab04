"""A non-editable install: the wheel carries conf/ and sweeps/, and the entry points find them."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and unpacked into a folder that shadows the editable install."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ and *.egg-info/ into the tree it builds.
    source = tmp / "source"
    for name in ("olmo_exp", "conf", "sweeps", "pyproject.toml", "README.md", "LICENSE"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name,
             **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("olmo_exp-*.whl")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    in_repo = {f"olmo_exp/{p.relative_to(REPO)}" for d in ("conf", "sweeps")
               for p in (REPO / d).rglob("*.yaml")}
    assert shipped == in_repo
    return target


def _run(installed: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_installed_wheel_finds_its_configs_sweeps_and_readme(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, tmp_path, "-c", "import olmo_exp.base.files as f; print(f.CONF_DIR)")
    assert where.stdout.strip() == str(installed / "olmo_exp" / "conf"), where.stderr
    help_ = _run(installed, tmp_path, "-m", "olmo_exp", "--help")
    assert help_.returncode == 0, help_.stderr
    shown = help_.stdout.splitlines()
    # The sweep presets, listed from the sweeps/ folder the wheel carries inside the package.
    presets = ", ".join(sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml")))
    assert "kv_heads" in presets
    (start,) = [i for i, line in enumerate(shown) if line.strip().startswith("+sweep ")]
    listed = shown[start].split()[1:]
    for more in shown[start + 1:]:  # a long list wraps onto indented continuation lines
        if not more.startswith(" " * 10):
            break
        listed += more.split()
    assert " ".join(listed) == presets, help_.stdout
    # Every README example (its ```bash blocks after the install one), in order, read from the
    # package metadata: no README.md is installed.
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)[1:]
    readme = [line for block in blocks for line in block.splitlines() if line.strip()]
    examples = shown[shown.index("== Examples (README.md) ==") + 1:][:len(readme)]
    assert len(readme) > 10 and [line[2:] for line in examples] == readme, help_.stdout
    job = _run(installed, tmp_path, "-m", "olmo_exp", "--cfg", "job", "+sweep=kv_heads")
    assert job.returncode == 0 and "n_kv_heads" in job.stdout, job.stderr
    data = _run(installed, tmp_path, "-m", "olmo_exp.data", "--help")
    assert data.returncode == 0 and "data=" in data.stdout, data.stderr
    bad = _run(installed, tmp_path, "-m", "olmo_exp.data", "data.nope=1")
    assert bad.returncode == 2 and "data.nope" in bad.stderr
    assert not any(tmp_path.iterdir())  # nothing was written where it ran
