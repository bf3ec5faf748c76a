"""Dataset adapters: turn a dataset as distributed into a TrackList (ids, sources, labels, split).

Every adapter only lists and validates: it reads folder listings, CSV files and the committed
split files, never audio. All problems found are collected and raised together as one
``DatasetError`` before anything is decoded.

``make_tracklist(name, source, options)`` with ``options`` an ``AdapterOptions`` (options.py: every
option, its help text, and the one check of how they combine). ``ADAPTERS`` maps each name to its
``Adapter`` (common.py): the lister, whether the dataset has an official split, its official folds
in file names, whether it is generated, and its defaults. Per adapter (track id; labels; default
split):

- ``synth-tags``: ``synth<seed>-<index:05d>``; ``SYNTH_TAGS`` (tags, grouped by level:
  ``label_groups``); stratified. ``synth-genre``: the same with corpus seed
  ``seed + GENRE_SEED_OFFSET``; ``SYNTH_GENRES`` (classes). Unless given: 300 tracks of 10-30 s, seed 0. (synthetic.py)
- ``synth-gm-tags`` / ``synth-gm-genre``: the same for ``msagg.data.synth.gm`` (ids ``synthgm<seed>-<index:05d>``,
  ``SYNTH_GM_TAGS`` grouped by level / ``SYNTH_GM_GENRES``), rendered through the SoundFont of the
  ``soundfont`` option (default: pretty_midi's TimGM6mb.sf2); ``pin_options`` gives its sha256. (synthetic.py)
- ``folder``: ``<class folder>/<file path in it without extension>``; class = sub-folder name
  (sorted; spaces allowed); stratified. Audio = ``AUDIO_EXTENSIONS``, hidden files ignored.
  ``esc10``: ``folder`` with fold_from_name ``^(\\d+)-`` and fold 1 unless folds or split is given.
  (files.py)
- ``csv`` (``csv-tags`` / ``csv-classes`` force the task): column ``path`` (relative to the CSV's
  folder, or absolute); labels from ``labels`` (names separated by ';'), or ``genre`` (one class),
  or else every other column as a 0/1 tag column; optional ``track_id``/``id`` (default: the
  path as written) and ``split`` (train / valid|val|validation|dev / test). Tags when a row has
  several labels or 0/1 columns are used, else classes. Tab-separated when the file ends in .tsv
  or its header has more tabs than commas. A path that does not exist as written is read in
  ``msagg.data.names.escape_name``'s form (how msagg writes names: ``caf\\xe9.ogg`` for a name
  whose bytes are not UTF-8), so a CSV can name any file. (tables.py)
- ``mtat``: root holding ``annotations_final.csv`` and folders ``0``..``f``; id = ``clip_id``;
  the 50 tags of ``data/splits/mtat/top50_tags.txt`` (tags); the committed split. (published.py)
- ``gtzan``: root holding ``genres/<genre>/<genre>.000NN.au|wav`` (or that ``genres`` folder);
  id = ``<genre>.000NN``; 10 genres (classes); the committed fault-filtered split, or
  ``split="random"`` over every file present. (published.py)
- ``fsdd``: folder (or its ``recordings/``) of ``{digit}_{speaker}_{index}.wav``; id = file stem;
  digits "0".."9" (classes); index 0-4 test (official), 5-9 valid (ours), the rest train. (files.py)

- ``unlabelled``: every audio file under a folder at any depth; id = its path in the folder without
  extension; no labels (tags task, 0 labels); valid = the ids whose ``hashed_split`` hash falls below
  ``UNLABELLED_VALID_FRACTION``, the rest train, no test. Pretrain on it with teacher labels. (files.py)

Options shared by all: ``split="random"`` (stratified with ``split_seed``), ``folds``/``fold``
(stratified k-fold, fold 1..k), ``fold_from_name``/``fold`` (folds written in file names; valid =
the next fold, or a slice of the others with ``fold_valid="slice"``), ``top_k`` (the k labels most
frequent in train). A split without valid tracks gets a stratified slice of train
(``splits.KFOLD_VALID_FRACTION``). Tracks of an official split missing on disk go to ``skipped``;
missing files a CSV names are errors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from msagg.data.adapters.common import AUDIO_EXTENSIONS, Adapter, DatasetError, Problems, finish, label_warnings
from msagg.data.adapters.files import ESC10, ESC10_FOLD_PATTERN, FOLDER, FSDD, FSDD_PATTERN, UNLABELLED
from msagg.data.adapters.options import GENERATED_ONLY, AdapterOptions
from msagg.data.adapters.published import GTZAN, GTZAN_FOLDERS, GTZAN_GENRES, MTAT
from msagg.data.adapters.synthetic import GENRE_SEED_OFFSET, SYNTH_GENRE, SYNTH_GM_GENRE, SYNTH_GM_TAGS, SYNTH_TAGS
from msagg.data.adapters.tables import CSV, CSV_CLASSES, CSV_TAGS
from msagg.data.tracklist import TrackList

__all__ = [
    "ADAPTERS", "AUDIO_EXTENSIONS", "Adapter", "AdapterOptions", "DatasetError", "ESC10_FOLD_PATTERN", "FSDD_PATTERN",
    "GENRE_SEED_OFFSET", "GTZAN_FOLDERS", "GTZAN_GENRES", "get_adapter", "label_groups", "label_warnings",
    "make_tracklist", "pin_options",
]  # fmt: skip

logger = logging.getLogger(__name__)

ADAPTERS: dict[str, Adapter] = {
    a.name: a for a in (SYNTH_TAGS, SYNTH_GENRE, SYNTH_GM_TAGS, SYNTH_GM_GENRE, FOLDER, ESC10, CSV, CSV_TAGS,
                        CSV_CLASSES, MTAT, GTZAN, FSDD, UNLABELLED)
}
"""Every dataset adapter by the name users give (``--dataset``), in the order the help lists them."""


def get_adapter(name: str) -> Adapter:
    """The adapter called ``name``.

    Raises:
        DatasetError: For an unknown name, listing the known ones.
    """
    if name not in ADAPTERS:
        raise DatasetError(str(name), {"unknown dataset": [f"{name!r}; known: {', '.join(ADAPTERS)}"]})
    return ADAPTERS[name]


def label_groups(dataset: str, label_names: Sequence[str]) -> dict[str, str] | None:
    """The group of each label (synth-tags, synth-gm-tags: its level, "acoustic", "instrument" or "high-level").

    Args:
        dataset: An adapter name (a features file's ``dataset``).
        label_names: The labels to group.

    Returns:
        label -> group for every label, ordered by group (in the adapter's order of groups), then
        as in ``label_names``; None for an unknown dataset, one that does not group its labels,
        or a label it does not know.
    """
    adapter = ADAPTERS.get(dataset)
    if adapter is None or adapter.label_groups is None:
        return None
    known = adapter.label_groups()
    if not label_names or any(label not in known for label in label_names):
        return None
    order = list(dict.fromkeys(known.values()))
    return {label: known[label] for group in order for label in label_names if known[label] == group}


def pin_options(name: str, options: AdapterOptions) -> dict[str, Any]:
    """Option values that fix the identity of the files the options name by path.

    synth-gm-*: ``{"soundfont_sha256": <sha256 of the SoundFont file>}``. prepare applies them to its
    config before hashing it, so a run folder made from one file is neither resumed nor reused
    with another one at the same path.

    Args:
        name: An adapter name (unknown names pin nothing; listing them fails later).
        options: The options as given (the dataset's defaults are applied here).

    Returns:
        The option values to set; {} for a dataset with nothing to pin.

    Raises:
        data.errors.MsaggError: One line naming a file that is missing, unreadable, no longer the
            pinned one, or a renderer that is not installed.
    """
    adapter = ADAPTERS.get(name)
    if adapter is None or adapter.pin is None or options.problems(adapter):
        return {}  # bad options are reported with every other problem when listed
    return dict(adapter.pin(adapter.with_defaults(options)))


def make_tracklist(
    name: str, source: str | os.PathLike | None = None, options: AdapterOptions | None = None
) -> TrackList:
    """Lists a dataset: track ids, sources, labels and split, validated; nothing is decoded.

    Args:
        name: The adapter, a key of ``ADAPTERS``: synth-tags, synth-genre, synth-gm-tags,
            synth-gm-genre, folder, esc10, csv, csv-tags, csv-classes, mtat, gtzan or fsdd.
        source: Folder or CSV file of the dataset (None for the generated ones).
        options: How to list it (None: every option at its default); the dataset's defaults
            (``Adapter.with_defaults``) fill the options left None.

    Returns:
        The TrackList; ``split_info`` records the adapter, source, split kind, seed or fold and
        files; ``skipped`` lists tracks of an official split that are not on disk.

    Raises:
        DatasetError: Listing every problem: unknown dataset or options, missing files,
            unknown tags, duplicate ids, empty classes, unreadable CSV rows (with line numbers),
            an empty dataset or a split without train tracks.
    """
    adapter = get_adapter(name)
    options = AdapterOptions() if options is None else options
    problems = Problems(f"{name} {source}" if source is not None else str(name))
    for message in options.problems(adapter):
        problems.add("bad option", message)
    problems.raise_if_any()
    opts = adapter.with_defaults(options)
    unused = [key for key in GENERATED_ONLY if not adapter.generated and getattr(opts, key) is not None]
    if unused:
        logger.warning("%s: %s only size generated datasets: ignored", name, ", ".join(unused))
    listing = adapter.lister(source, opts, problems)
    return finish(adapter, source, listing, opts, problems)
