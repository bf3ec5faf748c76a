"""Tests for data/splits.py: stratified and k-fold splits, folds from names, the committed split files."""

import re

import numpy as np
import pytest

from msagg.data import splits


def _classes(counts, seed=0):
    """One-hot labels with counts[c] tracks of class c, in a shuffled order."""
    y = np.repeat(np.arange(len(counts)), counts)
    y = y[np.random.default_rng(seed).permutation(len(y))]
    return np.eye(len(counts), dtype=np.uint8)[y]


def _tags(num_tracks=600, num_tags=12, seed=0):
    """Multi-hot labels with tag prevalences from 2 % to 40 %, plus a few untagged tracks."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.02, 0.4, num_tags)
    return (rng.random((num_tracks, num_tags)) < prevalence).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# committed split files


def test_official_gtzan_sizes_and_names():
    lists = splits.official_split("gtzan")
    assert {s: len(v) for s, v in lists.items()} == {"train": 443, "valid": 197, "test": 290}
    genres = {"blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"}
    for entry in sum(lists.values(), []):
        m = re.fullmatch(r"(\w+)/(\w+)\.000\d\d\.wav", entry)
        assert m and m.group(1) == m.group(2) and m.group(1) in genres, entry
    assert len(set(sum(lists.values(), []))) == 930


def test_official_mtat_sizes_and_names():
    lists = splits.official_split("mtat")
    assert {s: len(v) for s, v in lists.items()} == {"train": 15244, "valid": 1529, "test": 4332}
    assert all(re.fullmatch(r"[0-9a-f]/[^/]+\.mp3", e) for e in sum(lists.values(), []))
    assert len(set(sum(lists.values(), []))) == 15244 + 1529 + 4332


def test_mtat_top50_names_and_columns():
    pairs = splits.mtat_top50()
    assert len(pairs) == 50 and len({n for n, _ in pairs}) == 50
    assert pairs[:3] == [("guitar", "guitar"), ("classical", "classical"), ("slow", "slow")]
    assert ("noVocals", "no vocals") in pairs and ("femaleVoice", "female voice") in pairs
    assert pairs[-1] == ("choral", "choral")


def test_official_split_info_and_licence():
    info = splits.official_split_info("gtzan")
    assert info["kind"] == "official" and info["files"]["train"] == "data/splits/gtzan/train_filtered.txt"
    for rel in info["files"].values():
        assert (splits.SPLITS_DIR.parent.parent / rel).is_file()
    assert "MIT License" in (splits.SPLITS_DIR / "LICENSE").read_text()


def test_official_split_unknown_dataset():
    with pytest.raises(ValueError, match=r"no official split for 'esc10'.*gtzan.*mtat"):
        splits.official_split("esc10")


def test_read_split_file_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("# a comment\nblues/blues.00001.wav\n\n  rock/rock.00002.wav  \n")
    assert splits.read_split_file(path) == ["blues/blues.00001.wav", "rock/rock.00002.wav"]


# ---------------------------------------------------------------------------------------------
# stratified_split


def test_stratified_classes_golden_counts_per_class():
    labels = _classes([40] * 10)
    split, info = splits.stratified_split(labels, "classes", seed=3)
    split = np.array(split)
    for c in range(10):
        in_class = split[labels[:, c] == 1]
        assert [np.sum(in_class == s) for s in splits.SPLITS] == [28, 4, 8]
    assert info == {
        "kind": "stratified",
        "method": "per-class shuffle",
        "seed": 3,
        "fractions": [0.7, 0.1, 0.2],
        "counts": {"train": 280, "valid": 40, "test": 80},
    }


def test_stratified_is_deterministic_and_seeded():
    labels = _classes([13, 7, 21, 2, 1])
    a, _ = splits.stratified_split(labels, "classes", seed=0)
    b, _ = splits.stratified_split(labels, "classes", seed=0)
    c, _ = splits.stratified_split(labels, "classes", seed=1)
    assert a == b and a != c


def test_stratified_golden_small():
    labels = np.eye(2, dtype=np.uint8)[[0, 0, 0, 1, 1, 1, 0, 1, 0, 1]]
    split, _ = splits.stratified_split(labels, "classes", seed=0)
    # class 0 (5 tracks): 3.5 / 0.5 / 1 -> 4 / 0 / 1; class 1 gets what the totals 7 / 1 / 2 still lack
    assert split == ["train", "test", "train", "valid", "train", "train", "train", "test", "train", "train"]


def test_stratified_small_classes_always_reach_train():
    labels = _classes([1, 2, 3, 50])
    for seed in range(10):
        split = np.array(splits.stratified_split(labels, "classes", seed=seed)[0])
        for c in range(4):
            assert "train" in split[labels[:, c] == 1]


def test_stratified_small_classes_do_not_all_round_to_one_split():
    labels = _classes([3] * 20)  # 3 x (0.7, 0.1, 0.2) = 2.1, 0.3, 0.6: remainders spread by overall deficit
    counts = splits.stratified_split(labels, "classes", seed=0)[1]["counts"]
    assert counts == {"train": 42, "valid": 6, "test": 12}


def test_stratified_fractions_are_normalized():
    labels = _classes([50, 50])
    counts = splits.stratified_split(labels, "classes", fractions=(8, 1, 1), seed=0)[1]["counts"]
    assert counts == {"train": 80, "valid": 10, "test": 10}


def test_stratified_tags_balances_every_tag():
    labels = _tags()
    split, info = splits.stratified_split(labels, "tags", seed=0)
    split = np.array(split)
    assert info["method"] == "iterative stratification"
    for s, frac in zip(splits.SPLITS, (0.7, 0.1, 0.2)):
        assert abs(np.mean(split == s) - frac) < 0.02
        # each tag's share in this split is close to the split's share of tracks
        share = labels[split == s].sum(axis=0) / labels.sum(axis=0)
        assert np.all(np.abs(share - frac) <= 0.05 + 1.0 / labels.sum(axis=0)), (s, share)
    assert np.all(labels[split == "train"].any(axis=0))
    assert splits.stratified_split(labels, "tags", seed=0)[0] == list(split)


def test_stratified_tags_rare_tags_reach_train():
    labels = np.zeros((30, 3), dtype=np.uint8)
    labels[0, 0] = 1  # a tag on one track
    labels[[1, 2], 1] = 1  # on two
    labels[3:, 2] = 1
    for seed in range(10):
        split = np.array(splits.stratified_split(labels, "tags", seed=seed)[0])
        assert split[0] == "train" and "train" in split[[1, 2]]


def test_stratified_tags_untagged_tracks_are_split_too():
    labels = np.zeros((100, 2), dtype=np.uint8)
    labels[:50, 0] = 1
    counts = splits.stratified_split(labels, "tags", seed=0)[1]["counts"]
    assert counts == {"train": 70, "valid": 10, "test": 20}


def test_stratified_bad_inputs():
    with pytest.raises(ValueError, match="task must be"):
        splits.stratified_split(_classes([5]), "genres")
    with pytest.raises(ValueError, match="one label per track"):
        splits.stratified_split(np.ones((4, 2), dtype=np.uint8), "classes")
    with pytest.raises(ValueError, match="fractions"):
        splits.stratified_split(_classes([5]), "classes", fractions=(0.5, 0.5))


# ---------------------------------------------------------------------------------------------
# kfold


@pytest.mark.parametrize("task", ["classes", "tags"])
def test_kfold_tests_every_track_once(task):
    labels = _classes([23, 17, 40]) if task == "classes" else _tags(200, 6)
    tested = np.zeros(len(labels), dtype=int)
    for fold in range(1, 6):
        split, info = splits.kfold(labels, task, 5, fold, seed=4)
        split = np.array(split)
        tested += split == "test"
        assert info["kind"] == "kfold" and info["fold"] == fold and info["folds"] == 5 and info["seed"] == 4
        assert abs(np.sum(split == "test") - len(labels) / 5) <= 3
        rest = np.sum(split != "test")
        assert abs(np.sum(split == "valid") - rest * splits.KFOLD_VALID_FRACTION) <= 3
        assert np.all(labels[split == "train"].any(axis=0))
    assert np.all(tested == 1)


def test_kfold_classes_balanced_per_class():
    labels = _classes([40] * 10)
    split = np.array(splits.kfold(labels, "classes", 5, 3, seed=0)[0])
    for c in range(10):
        in_class = split[labels[:, c] == 1]
        assert [np.sum(in_class == s) for s in splits.SPLITS] == [28, 4, 8]


def test_kfold_bad_fold():
    labels = _classes([10, 10])
    with pytest.raises(ValueError, match=r"fold must be between 1 and 5"):
        splits.kfold(labels, "classes", 5, 0)
    with pytest.raises(ValueError, match=r"fold must be between 1 and 5"):
        splits.kfold(labels, "classes", 5, 6)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        splits.kfold(labels, "classes", 1, 1)


# ---------------------------------------------------------------------------------------------
# folds_from_names

ESC_NAMES = [f"{fold}-{100000 + 7 * i}-{'AB'[i % 2]}.ogg" for fold in range(1, 6) for i in range(8)]


def test_folds_from_names_esc10_style():
    split, info = splits.folds_from_names(ESC_NAMES, r"^(\d)-", 1)
    split = np.array(split)
    folds = np.array([int(n[0]) for n in ESC_NAMES])
    assert np.all(split[folds == 1] == "test")
    assert np.all(split[folds == 2] == "valid")
    assert np.all(split[folds >= 3] == "train")
    assert info == {
        "kind": "folds_from_names",
        "pattern": r"^(\d)-",
        "fold": 1,
        "folds": [1, 2, 3, 4, 5],
        "valid": "next",
        "valid_fold": 2,
        "counts": {"train": 24, "valid": 8, "test": 8},
    }


def test_folds_from_names_wraps_and_compares_numbers():
    split, info = splits.folds_from_names(ESC_NAMES, r"^(\d)-", "05")
    assert info["fold"] == 5 and info["valid_fold"] == 1
    assert [s for n, s in zip(ESC_NAMES, split) if n.startswith("1-")] == ["valid"] * 8


def test_folds_from_names_slice_keeps_all_other_folds_for_training():
    labels = np.eye(2, dtype=np.uint8)[np.arange(len(ESC_NAMES)) % 2]
    split, info = splits.folds_from_names(ESC_NAMES, r"^(\d)-", 2, valid="slice", labels=labels, task="classes")
    split = np.array(split)
    assert np.all(split[[n.startswith("2-") for n in ESC_NAMES]] == "test")
    assert info["counts"] == {"train": 28, "valid": 4, "test": 8}


def test_folds_from_names_lists_every_unmatched_name():
    names = ESC_NAMES + ["x-1.ogg", "readme.ogg"]
    with pytest.raises(ValueError, match=r"matches no fold in 2 names: x-1\.ogg, readme\.ogg"):
        splits.folds_from_names(names, r"^(\d)-", 1)


def test_folds_from_names_bad_inputs():
    with pytest.raises(ValueError, match=r"fold 7 is not among the folds found in the names: \[1, 2, 3, 4, 5\]"):
        splits.folds_from_names(ESC_NAMES, r"^(\d)-", 7)
    with pytest.raises(ValueError, match="needs a group"):
        splits.folds_from_names(ESC_NAMES, r"^\d-", 1)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        splits.folds_from_names(ESC_NAMES, r"^(\d-", 1)
    with pytest.raises(ValueError, match="at least 3 folds"):
        splits.folds_from_names(["a-1", "b-1"], r"^(\w)-", "a")
