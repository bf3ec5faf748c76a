"""Records the original musicnn's outputs on the fixture clips: the reference tests/test_musicnn.py checks the port against.

Runs musicnn 0.1.0's own ``extractor`` unmodified. Its model code builds the graph with
``tf.compat.v1.layers``, which TensorFlow 2.16+ serves only from the legacy Keras 2 package
(``tf-keras``, of the installed TensorFlow's version) when ``TF_USE_LEGACY_KERAS=1``. Install both
into a scratch folder, outside msagg's environment (musicnn pins numpy<1.17, hence --no-deps):

    .venv/bin/python -m pip install --no-deps --target /tmp/mnn-pkg 'musicnn==0.1.0' 'tf-keras==2.21.0'
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=/tmp/mnn-pkg .venv/bin/python \\
        tests/campaigns/record_musicnn_reference.py tests/data/musicnn_reference.npz

The file holds, for each model (MTT_musicnn, MSD_musicnn) and clip (``tests/musicnn_clips.py``),
``<model>/<clip>/taggram`` (num_patches, 50) tag probabilities per 3-s patch (no overlap),
``<model>/<clip>/mean`` (50,) their mean over patches (musicnn's song-level tags),
``<model>/<clip>/penultimate`` (200,) the first patch's penultimate features, ``<model>/<clip>/overlap/taggram`` for
the overlap clip (``input_overlap=1``), ``<clip>/audio_stats`` (mean, std of the int16 samples:
the test checks it regenerated the same clips), and ``versions`` (musicnn, TensorFlow, librosa, numpy).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import musicnn_clips  # noqa: E402

MODELS = ("MTT_musicnn", "MSD_musicnn")


def main(out: Path) -> None:
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("set TF_USE_LEGACY_KERAS=1 (musicnn's tf.compat.v1.layers need tf-keras); see the docstring")
    import librosa
    import tensorflow as tf
    from musicnn.extractor import extractor

    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = musicnn_clips.write_clips(Path(tmp))
        for clip, audio in musicnn_clips.make_clips().items():
            record[f"{clip}/audio_stats"] = np.array([audio.mean(dtype=np.float64), audio.std(dtype=np.float64)])
        for model in MODELS:
            for clip, path in paths.items():
                taggram, labels, features = extractor(str(path), model=model, input_length=3)
                record[f"{model}/{clip}/taggram"] = taggram.astype(np.float32)
                record[f"{model}/{clip}/mean"] = taggram.mean(axis=0).astype(np.float32)
                # Only the first patch's: the extractor's loop over the later patches appends the
                # first patch's penultimate (and cnn1-3) again instead of theirs.
                record[f"{model}/{clip}/penultimate"] = features["penultimate"][0].astype(np.float32)
                print(model, clip, taggram.shape, "top tags:",
                      [labels[i] for i in np.argsort(-taggram.mean(axis=0))[:3]], flush=True)
            taggram, _ = extractor(str(paths[musicnn_clips.OVERLAP_CLIP]), model=model, input_length=3,
                                   input_overlap=musicnn_clips.OVERLAP_SEC, extract_features=False)
            record[f"{model}/{musicnn_clips.OVERLAP_CLIP}/overlap/taggram"] = taggram.astype(np.float32)
    from importlib.metadata import version

    record["versions"] = np.array(json.dumps({"musicnn": version("musicnn"), "tensorflow": tf.__version__,
                                              "librosa": librosa.__version__, "numpy": np.__version__}))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **record)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(record)} arrays)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
