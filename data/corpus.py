"""The real-music corpus of the shipped ``general`` family: the soundtracks of nine Debian game packages.

``python -m msagg.data.corpus --out DIR`` downloads the packages with ``apt-get download`` (a Debian
or Ubuntu machine with those packages in its sources; nothing is installed), takes the music out of
each (``dpkg-deb -x``, and the zip archives some games keep it in) into ``DIR/<game>/``, and writes
``DIR/CORPUS.md`` (packages, versions, files, hours, licences). ``make pretrain-general`` runs it.
Any other folder of music serves as well: ``msagg prepare --dataset unlabelled --source ~/Music``.

The licences are those of each package's ``debian/copyright`` for its music files; they are
recorded here and in CORPUS.md, which ships beside the models trained on the corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MUSIC_EXTENSIONS = (".ogg", ".opus")


@dataclasses.dataclass(frozen=True)
class Soundtrack:
    """One package's music.

    Attributes:
        package: The Debian package.
        game: The folder its music goes to.
        base: The folder inside the package (or inside ``archive``) holding the music: every
            .ogg/.opus file under it, at any depth, is taken.
        licence: The licence of those files (from the package's debian/copyright).
        archive: A zip archive in the package that holds the music (None: plain files). Files
            from an archive keep their path in it; plain files their path below ``base``.
    """

    package: str
    game: str
    base: str
    licence: str
    archive: str | None = None


SOUNDTRACKS = (
    Soundtrack("wesnoth-1.16-music", "wesnoth", "usr/share/games/wesnoth/1.16/data/core/music", "GPL-2"),
    Soundtrack("ufoai-music", "ufoai", "music", "GPL-2+, CC BY 3.0 and CC BY-SA 3.0 (per file, see its copyright)",
               archive="usr/share/games/ufoai/base/0music.pk3"),
    Soundtrack("warzone2100-music", "warzone2100", "usr/share/games/warzone2100/music", "GPL-2+"),
    Soundtrack("nexuiz-music", "nexuiz", "sound/cdtracks", "GPL-2+", archive="usr/share/games/nexuiz/data/music.pk3"),
    Soundtrack("hyperrogue-music", "hyperrogue", "usr/share/hyperrogue/music", "GPL-2+"),
    Soundtrack("planetblupi-music-ogg", "planetblupi", "usr/share/planetblupi/music", "GPL-3+"),
    Soundtrack("singularity-music", "singularity", "usr/share/games/singularity/music", "CC BY-SA 3.0"),
    Soundtrack("supertux-data", "supertux", "usr/share/games/supertux2/music", "GPL-2+ (data/music)"),
    Soundtrack("0ad-data", "0ad", "audio/music", "CC BY-SA 3.0", archive="usr/share/games/0ad/mods/public/public.zip"),
)
"""The packages and where their music lies (Debian 12, bookworm)."""


def _is_music(name: str, base: str) -> bool:
    return name.lower().endswith(MUSIC_EXTENSIONS) and name.startswith(base.rstrip("/") + "/")


def _copy(src, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def _extract(deb: Path, track: Soundtrack, out: Path, scratch: Path) -> list[Path]:
    """The music files of one downloaded package, copied into ``out``."""
    root = scratch / track.package
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    written = []
    if track.archive is None:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and _is_music(rel, track.base):
                with open(path, "rb") as src:
                    written.append(_copy(src, out / Path(rel).relative_to(track.base)))
    else:
        with zipfile.ZipFile(root / track.archive) as zf:
            for name in sorted(zf.namelist()):
                if _is_music(name, track.base):
                    with zf.open(name) as src:
                        written.append(_copy(src, out / name))
    shutil.rmtree(root, ignore_errors=True)
    return written


def _version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                          text=True).stdout.strip()


def build(out: Path) -> Path:
    """Downloads the packages and writes their music and CORPUS.md under ``out``; returns CORPUS.md."""
    import soundfile as sf

    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("msagg.data.corpus: needs apt-get and dpkg-deb (Debian or Ubuntu); on another system, "
                         "prepare any folder of music with --dataset unlabelled")
    out.mkdir(parents=True, exist_ok=True)
    rows, total = [], 0.0
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        scratch = Path(scratch)
        for track in SOUNDTRACKS:
            subprocess.run(["apt-get", "download", track.package], cwd=scratch, check=True)
            deb = next(scratch.glob(f"{track.package}_*.deb"))
            files = _extract(deb, track, out / track.game, scratch)
            seconds = sum(sf.info(str(f)).duration for f in files)
            total += seconds
            rows.append(f"| {track.package} | {_version(deb)} | {len(files)} | {seconds / 3600:.2f} | {track.licence} |")
            deb.unlink()
    corpus = out / "CORPUS.md"
    corpus.write_text(
        "# The music corpus\n\nThe soundtracks of nine Debian (bookworm) game packages, as "
        "`python -m msagg.data.corpus` takes them out.\n\n"
        "| package | version | files | hours | licence of the music |\n|---|---|---:|---:|---|\n"
        + "\n".join(rows) + f"\n| **all** | | | **{total / 3600:.2f}** | |\n", encoding="utf-8")
    return corpus


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msagg.data.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="Folder for the music (one sub-folder per game).")
    args = parser.parse_args(argv)
    print(build(args.out).read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
