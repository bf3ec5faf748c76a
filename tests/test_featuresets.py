"""Feature sets: the grammar, canonical names, the default list, assembly; no Keras needed."""

import numpy as np
import pytest

from fresh_imports import modules_loaded_by
from msagg.stages.songs import featuresets as F
from msagg.models.specs import TAPS
from msagg.stages.songs.featuresets import FeatureSet, FeatureSetError

AVAILABLE = ("3^8", "3^9", "4^6")


@pytest.mark.parametrize("spec, name, group, scales, layers", [
    ("3^9@-1", "3^9@-1", "multi-level", ("3^9",), ("-1",)),
    ("3^9", "3^9@last3", "multi-level", ("3^9",), ("-3", "-2", "-1")),
    ("3x9 @ last3", "3^9@last3", "multi-level", ("3^9",), ("-3", "-2", "-1")),
    ("3^9@-1,-2", "3^9@-2,-1", "multi-level", ("3^9",), ("-2", "-1")),
    ("3^9@-3,-2,-1", "3^9@last3", "multi-level", ("3^9",), ("-3", "-2", "-1")),
    ("3^9+3^8", "3^8+3^9", "multi-scale", ("3^8", "3^9"), ("-3", "-2", "-1")),
    ("3^8+3^9@last3", "3^8+3^9", "multi-scale", ("3^8", "3^9"), ("-3", "-2", "-1")),
    ("3^9+3**8@-1", "3^8+3^9@-1", "multi-scale", ("3^8", "3^9"), ("-1",)),
    ("all@-3", "3^8+3^9+4^6@-3", "multi-scale", AVAILABLE, ("-3",)),
    ("all", "3^8+3^9+4^6", "multi-scale", AVAILABLE, ("-3", "-2", "-1")),
])
def test_grammar_and_canonical_names(spec, name, group, scales, layers):
    fs = F.parse_feature_set(spec, AVAILABLE)
    assert (fs.name, fs.group, fs.scales, fs.layers) == (name, group, scales, layers)
    assert F.parse_feature_set(fs.name, AVAILABLE) == fs  # a name parses back to its set


def test_parts_labels_and_assembly():
    fs = F.parse_feature_set("3^8+3^9@-2,-1")
    assert fs.parts == [("3^8", "-2"), ("3^8", "-1"), ("3^9", "-2"), ("3^9", "-1")]
    assert fs.layers_label == "-2, -1" and F.parse_feature_set("3^8+3^9").layers_label == "last 3 each"
    assert F.parse_feature_set("3^9").layers_label == "last 3"
    feats = {s: {t: np.full((2, int(t[1])), 10 * i + int(t[1]), np.float32) for t in TAPS}
             for i, s in enumerate(("3^8", "3^9"))}
    x = F.assemble(feats, fs)
    assert x.dtype == np.float32 and x.shape == (2, 2 + 1 + 2 + 1)
    np.testing.assert_array_equal(x[0], [2, 2, 1, 12, 12, 11])


def test_normalize_spec_keeps_all_and_checks_known_scales():
    assert F.normalize_spec("all@last3") == "all" and F.normalize_spec("all@-1,-3") == "all@-3,-1"
    assert F.normalize_spec("3^9 + 3^8", known=AVAILABLE) == "3^8+3^9"
    with pytest.raises(FeatureSetError, match=r"unknown scale '7\^7'; known: 3\^8, 3\^9, 4\^6"):
        F.normalize_spec("3^9+7^7", known=AVAILABLE)


@pytest.mark.parametrize("spec, message", [
    ("", "no scales"),
    ("3^9@", "no layers after '@'"),
    ("3^9@-4", "unknown layer '-4'"),
    ("3^9@last3,-1", "unknown layer 'last3'"),
    ("3^9++3^8", "empty scale"),
    ("nine@-1", "'nine' is not a scale"),
])
def test_malformed_specs_are_refused(spec, message):
    with pytest.raises(FeatureSetError, match=message):
        F.parse_feature_set(spec, AVAILABLE)


def test_scales_outside_the_file_and_all_without_a_file():
    with pytest.raises(FeatureSetError, match=r"scale 5\^5 is not in x\.h5 \(it holds 3\^8, 3\^9, 4\^6\)"):
        F.parse_feature_set("3^8+5^5@-1", AVAILABLE, source="x.h5")
    with pytest.raises(FeatureSetError, match="needs the scales"):
        F.parse_feature_set("all@-1")


def test_default_list_and_specs():
    names = [fs.name for fs in F.feature_sets(AVAILABLE, include_single=False)]
    assert names == ["3^9@last3", "3^8+3^9", "3^8+3^9+4^6"]
    sets = F.feature_sets(AVAILABLE, specs=("3^8+3^9@-1", "3^9@-1", "all"), include_single=True)
    names = [fs.name for fs in sets]
    assert names[:4] == ["3^8@-3", "3^8@-2", "3^8@-1", "3^8@last3"] and len(names) == 12 + 2
    assert names[-2:] == ["3^8+3^9@-1", "3^8+3^9+4^6"]  # 3^9@-1 and all@last3 are there once


def test_join_continuations_rejoins_comma_split_layers():
    assert F.join_continuations(["3^9@-2", "-1", "3^8+3^9", "all@-3", "-1", "3^8"]) == [
        "3^9@-2,-1", "3^8+3^9", "all@-3,-1", "3^8"]


def test_a_bare_scale_takes_its_last_three_layers():
    assert FeatureSet.of(["3^9"]).name == "3^9@last3"


def test_importable_without_keras_or_matplotlib():
    loaded = modules_loaded_by("msagg.stages.songs.featuresets")
    assert not {m for m in ("keras", "tensorflow", "matplotlib") if m in loaded}

def test_classic_sets_in_the_grammar():
    """mfcc stands among the scales, takes no layers, and comes last in canonical names."""
    assert F.normalize_spec("mfcc") == "mfcc"
    assert F.normalize_spec("all+mfcc") == "all+mfcc" and F.normalize_spec("mfcc + all @ -1") == "all@-1+mfcc"
    assert F.normalize_spec("3^9+mfcc@-1") == F.normalize_spec("3^9@-1+mfcc") == "3^9@-1+mfcc"
    fs = F.parse_feature_set("all+mfcc", AVAILABLE, available_classic=["mfcc"])
    assert fs.name == "3^8+3^9+4^6+mfcc" and fs.group == "learned + classic" and fs.classic == ("mfcc",)
    assert fs.parts[-1] == (F.CLASSIC_KEY, "mfcc") and fs.learned.name == "3^8+3^9+4^6"
    alone = F.parse_feature_set("mfcc", AVAILABLE, available_classic=["mfcc"])
    assert alone.group == "classic" and alone.parts == [(F.CLASSIC_KEY, "mfcc")] and alone.layers_label == "-"
    for spec, message in (("mfcc@-1", "takes no layers"), ("mfcc+mfcc", "named twice"),
                          ("3^9@-1+3^8@-2", "one '@' per set")):
        with pytest.raises(FeatureSetError, match=message):
            F.normalize_spec(spec)
    with pytest.raises(FeatureSetError, match="holds no mfcc features"):
        F.parse_feature_set("all+mfcc", AVAILABLE, available_classic=[])
    names = [fs.name for fs in F.feature_sets(AVAILABLE, include_single=False, classic=["mfcc"])]
    assert names[-3:] == ["3^8+3^9+4^6", "mfcc", "3^8+3^9+4^6+mfcc"]
    x = {"3^8": {"-1": np.ones((2, 3))}, F.CLASSIC_KEY: {"mfcc": np.zeros((2, 4))}}
    assert F.assemble(x, F.FeatureSet.of(["3^8"], ["-1"], ["mfcc"])).tolist() == [[1, 1, 1, 0, 0, 0, 0]] * 2
