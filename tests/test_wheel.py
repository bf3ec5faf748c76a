"""The wheel a user installs: built from a copy of the checkout, installed into a fresh virtual environment,
run from another folder (no source tree in reach): `msagg --help` and the tiny pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("msagg", "pipeline", "stages", "data", "models")
BUILD_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md")


def _run(cmd, *, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def _source_subpackages() -> set[str]:
    """Every package of the checkout by its installed name (msagg.data.adapters, ...)."""
    names = {"msagg"}
    for folder in FOLDERS[1:]:
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            names.add(".".join(("msagg",) + parts))
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (no build isolation, so nothing downloaded) from a copy of the checkout's sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", tmp / "dist",
          src], cwd=tmp)
    (built,) = (tmp / "dist").glob("msagg-*.whl")
    return built


def test_the_wheel_holds_every_subpackage_the_split_files_and_the_shipped_models(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _source_subpackages() <= packages, sorted(_source_subpackages() - packages)
    assert "msagg/__main__.py" in names
    committed = [p.relative_to(ROOT / "data").as_posix() for p in (ROOT / "data" / "splits").rglob("*") if p.is_file()]
    assert committed and all(f"msagg/data/{name}" in names for name in committed)
    shipped = [p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models" / "pretrained").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert any(name.endswith("model.keras") for name in shipped)
    assert all(f"msagg/models/{name}" in names for name in shipped), sorted(set(shipped) - set(names))
    assert not [n for n in names if n.split("/")[0] in ("pipeline", "stages", "data", "models", "tests")]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; its dependencies are this interpreter's, reached
    through a .pth line (no download, and no editable msagg of the checkout: nested .pth files stay unread).
    The environment sits inside a git repository of its own, as a user's project venv often does."""
    project = tmp_path_factory.mktemp("project")
    _git_repo(project)
    env_dir = project / ".venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env_dir).stdout.strip()
    Path(site, "_msagg_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel],
         cwd=env_dir)
    return env_dir


def _git_repo(folder: Path) -> None:
    _run(["git", "init", "-q"], cwd=folder)
    _run(["git", "-c", "user.email=u@example.org", "-c", "user.name=u", "commit", "-q", "--allow-empty", "-m", "x"],
         cwd=folder)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def test_the_installed_command_runs_from_another_folder(installed, tmp_path):
    msagg = installed / "bin" / "msagg"
    python = installed / "bin" / "python"
    env = _clean_env()
    res = _run([msagg, "--help"], cwd=tmp_path, env=env, timeout=120)
    assert "msagg prepare" in res.stdout
    where = _run([python, "-c", "import msagg, msagg.data.adapters, msagg.pipeline.cli; print(msagg.__file__); "
                  "print(msagg.__version__)"], cwd=tmp_path, env=env, timeout=120).stdout.split()
    assert Path(where[0]).is_relative_to(installed) and where[1] == "0.1.0"


def test_the_installed_tiny_pipeline(installed, tmp_path):
    """prepare -> pretrain -> extract -> classify with the installed command, from a folder that is a git
    repository, with msagg installed in another: metadata.json records neither commit as msagg's."""
    msagg = str(installed / "bin" / "msagg")
    env = _clean_env()
    _git_repo(tmp_path)
    steps = [
        ["prepare", "--dataset", "synth-tags", "--preset", "tiny", "--workers", "1", "--out", "prep"],
        ["pretrain", "--cache", "prep", "--preset", "tiny", "--out", "pre"],
        ["extract", "--pretrain", "pre", "--cache", "prep", "--out", "ext"],
        ["classify", "--features", "ext", "--classifier", "logreg", "--feature-set", "all@-1", "--out", "cls"],
    ]
    for step in steps:
        _run([msagg, *step], cwd=tmp_path, env=env)
    for folder in ("prep", "pre", "ext", "cls"):
        assert (tmp_path / folder / "DONE").is_file()
        metadata = json.loads((tmp_path / folder / "metadata.json").read_text())
        assert metadata.get("git_commit") is None, metadata
    assert "ROC-AUC" in (tmp_path / "cls" / "results.md").read_text()


def test_the_installed_shipped_family_tags_audio_with_nothing_trained(installed, tmp_path):
    import soundfile as sf

    t = np.arange(4 * 22050) / 22050
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    res = _run([installed / "bin" / "msagg", "predict", "tone.wav", "--pretrain", "general", "--format", "json"],
               cwd=tmp_path, env=_clean_env(), timeout=300)
    (result,) = json.loads(res.stdout)
    assert len(result["scores"]) == 92 and "piano" in result["scores"]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="msagg does not run from a git checkout here")
def test_a_checkout_records_its_own_commit(tmp_path):
    from msagg.stages.runs.folder import RunFolder

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Toy:
        seed: int = 0

    head = _run(["git", "rev-parse", "HEAD"], cwd=ROOT).stdout.strip()
    folder = RunFolder(tmp_path / "run", "toy", Toy())
    folder.start()
    folder.finish()
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["git_commit"] == head
