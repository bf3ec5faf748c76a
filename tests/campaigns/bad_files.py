"""Bad-file campaign: a folder-per-class corpus of good WAV/FLAC/OGG files plus damaged ones and odd
names; prepare it and count good files present in the cache and bad files named in skipped.csv.
Usage: python bad_files.py WORKDIR"""
import csv, io, os, sys
from pathlib import Path
import numpy as np, soundfile as sf
from msagg.data.formats.cache import AudioCache
from msagg.data.names import escape_name
from msagg.stages import prepare

def main():
    global root, rng
    work = Path(sys.argv[1]); root = os.fsencode(work / "corpus"); rng = np.random.default_rng(0)
    def audio(fmt, seconds=1.0, rate=16000):
        buf = io.BytesIO(); sf.write(buf, rng.uniform(-0.3, 0.3, int(seconds * rate)).astype(np.float32), rate, format=fmt)
        return buf.getvalue()
    def plant(rel, data):
        path = os.path.join(root, rel); os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").write(data); return path
    good, bad = [], []
    names = [b"plain", b"caf\xe9", b"new\nline", b"-dash", b"tab\there", b"sp ace", b"\xff\xfe", b"emoji-\xf0\x9f\x8e\xb5"]
    for c, cls in enumerate([b"a", b"b\xe9", b"-c"]):
        for i, name in enumerate(names):
            for fmt, ext in (("WAV", b".wav"), ("FLAC", b".flac"), ("OGG", b".ogg")):
                good.append(plant(cls + b"/" + name + b"%d-" % i + ext[1:] + ext, audio(fmt)))
    w = audio("WAV", 10.0)
    bad += [plant(b"a/truncated.wav", w[: len(w) // 3]), plant(b"a/empty.wav", b""), plant(b"b\xe9/garbage.wav", os.urandom(5000)),
            plant(b"b\xe9/text\xe9.flac", b"not audio at all\n" * 50), plant(b"-c/header-only.wav", w[:44]),
            plant(b"-c/renamed-ogg.wav", audio("OGG")[:200]), plant(b"a/zero-frames.wav", audio("WAV", 0.0)),
            plant(b"b\xe9/truncated.flac", audio("FLAC", 5.0)[:3000]), plant(b"-c/bad\nname.ogg", os.urandom(3000))]
    config = prepare.Config(dataset="folder", source=os.fsdecode(root), sample_rate=16000)
    prepare.run(config, work / "out", progress=False, workers=2)
    with AudioCache(work / "out") as cache:
        present = set(cache.sources.tolist())
    skipped = {row[0] for row in list(csv.reader(open(work / "out" / "skipped.csv", encoding="utf-8")))[1:]}
    g = sum(escape_name(os.fsdecode(p)) in present for p in good)
    b = sum(escape_name(os.fsdecode(p)) in skipped for p in bad)
    print(f"good files: {len(good)} planted, {g} in the cache; bad files: {len(bad)} planted, {b} named in skipped.csv")
    for row in list(csv.reader(open(work / "out" / "skipped.csv", encoding="utf-8")))[1:]:
        print("  skipped:", row[0].split("corpus/")[-1], "->", row[1])

if __name__ == "__main__":
    main()
