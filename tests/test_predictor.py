"""Saved classifiers for `msagg predict`: loading them needs neither matplotlib nor the classify stage."""

from fresh_imports import modules_loaded_by


def test_predict_modules_import_without_matplotlib():
    loaded = modules_loaded_by("msagg.stages.predict", "msagg.stages.songs.predictor")
    assert "matplotlib" not in loaded
    assert "msagg.stages.classify" not in loaded and "msagg.stages.songs.plots" not in loaded
