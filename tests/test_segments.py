"""msagg.data.segments: non-overlapping segments, short tracks padded to one, remainders dropped or covered."""

import numpy as np
import pytest

from msagg.data.segments import num_segments, segment, segment_starts


@pytest.mark.parametrize(
    "num_samples, length, expected",
    [(0, 4, 1), (3, 4, 1), (4, 4, 1), (7, 4, 1), (8, 4, 2), (11, 4, 2), (12, 4, 3),
     (22050 * 29, 59049, 10), (59048, 59049, 1), (3 * 59049 + 5, 59049, 3)],
)
def test_num_segments(num_samples, length, expected):
    assert num_segments(num_samples, length) == expected


def test_segment_drops_the_remainder():
    out = segment(np.arange(10), 4)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 1, 2, 3], [4, 5, 6, 7]])


def test_segment_exact_multiple():
    np.testing.assert_array_equal(segment(np.arange(8), 4), [[0, 1, 2, 3], [4, 5, 6, 7]])


def test_short_track_is_zero_padded_to_one_segment():
    np.testing.assert_array_equal(segment(np.array([1.0, 2.0, 3.0]), 5), [[1, 2, 3, 0, 0]])
    np.testing.assert_array_equal(segment(np.zeros(0), 3), [[0, 0, 0]])


def test_segment_starts():
    np.testing.assert_array_equal(segment_starts(10, 4), [0, 4])
    np.testing.assert_array_equal(segment_starts(3, 4), [0])
    assert segment_starts(10, 4).dtype == np.int64


@pytest.mark.parametrize(
    "num_samples, length, expected",
    [(0, 4, 1), (3, 4, 1), (4, 4, 1), (5, 4, 2), (7, 4, 2), (8, 4, 2), (9, 4, 3), (12, 4, 3),
     (22050 * 5, 59049, 2), (59048, 59049, 1), (3 * 59049, 59049, 3)],
)
def test_num_segments_cover(num_samples, length, expected):
    assert num_segments(num_samples, length, "cover") == expected


def test_cover_adds_one_segment_ending_at_the_end():
    np.testing.assert_array_equal(segment(np.arange(10), 4, "cover"), [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]])
    np.testing.assert_array_equal(segment_starts(10, 4, "cover"), [0, 4, 6])
    np.testing.assert_array_equal(segment(np.arange(8), 4, "cover"), segment(np.arange(8), 4))  # no remainder
    np.testing.assert_array_equal(segment(np.array([1.0, 2.0, 3.0]), 5, "cover"), [[1, 2, 3, 0, 0]])
    wave = np.random.default_rng(1).standard_normal(1003)
    covered = np.zeros(1003, bool)
    for start in segment_starts(1003, 100, "cover"):
        covered[start:start + 100] = True
    assert covered.all()
    assert segment(wave, 100, "cover").shape == (11, 100)
    with pytest.raises(ValueError, match="segments must be one of cover, drop, got 'all'"):
        segment(wave, 100, "all")


@pytest.mark.parametrize("segments", ["drop", "cover"])
def test_segments_agree_with_starts_and_counts(segments):
    wave = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    for length in (1, 7, 27, 243, 999, 1000, 1001, 2187):
        segs = segment(wave, length, segments)
        starts = segment_starts(len(wave), length, segments)
        assert segs.shape == (num_segments(len(wave), length, segments), length) and len(starts) == len(segs)
        for seg, start in zip(segs, starts):
            piece = wave[start : start + length]
            np.testing.assert_array_equal(seg[: len(piece)], piece)


@pytest.mark.parametrize("length", [0, -3])
def test_bad_length(length):
    with pytest.raises(ValueError, match="segment length must be positive"):
        num_segments(10, length)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_samples"):
        num_segments(-1, 4)
    with pytest.raises(ValueError, match="1-D"):
        segment(np.zeros((2, 8)), 4)
