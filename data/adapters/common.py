"""What every adapter shares: the error that lists all problems, the Adapter description, the
listing an adapter returns, and the steps after it (split, valid slice, top_k, label checks)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msagg.data import splits as splits_mod
from msagg.data.adapters.options import AdapterOptions
from msagg.data.errors import MsaggError
from msagg.data.names import escape_name
from msagg.data.tracklist import TrackList

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".au", ".aiff", ".aif")
"""File name endings the folder adapters list (case-insensitive)."""

MAX_SHOWN_PER_KIND = 10


class DatasetError(MsaggError):
    """A dataset that cannot be listed; the message names every kind of problem found.

    The message is one line for one problem (``"<dataset>: <kind>: <detail>"``), else a first line
    counting them and one line per problem.

    Attributes:
        dataset: The dataset (adapter name and source).
        problems: Every problem, as "kind: detail" strings (the message shows at most
            ``MAX_SHOWN_PER_KIND`` of each kind).
    """

    def __init__(self, dataset: str, problems: Mapping[str, Sequence[str]]):
        self.dataset = dataset
        self.problems = [f"{kind}: {d}" if d else kind for kind, items in problems.items() for d in items]
        if len(self.problems) == 1:  # one problem, one line: "csv x.csv: not a CSV file: byte 0x88 ..."
            super().__init__(f"{dataset}: {self.problems[0]}")
            return
        lines = [f"{dataset}: {len(self.problems)} problems found, nothing decoded:"]
        for kind, items in problems.items():
            for detail in items[:MAX_SHOWN_PER_KIND]:
                lines.append(f"  {kind}: {detail}" if detail else f"  {kind}")
            if len(items) > MAX_SHOWN_PER_KIND:
                lines.append(f"  ... and {len(items) - MAX_SHOWN_PER_KIND} more '{kind}'")
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (_rebuild_error, (self.dataset, self.problems, str(self)))


def _rebuild_error(dataset, problems, message):
    err = DatasetError.__new__(DatasetError)
    ValueError.__init__(err, message)
    err.dataset, err.problems = dataset, problems
    return err


class Problems:
    """Collects problems by kind, in the order found."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.items: dict[str, list[str]] = {}

    def add(self, kind: str, detail: str = "") -> None:
        self.items.setdefault(kind, []).append(detail)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DatasetError(self.dataset, self.items)


@dataclasses.dataclass
class Listing:
    """What an adapter found, before the split is resolved and top_k applied."""

    name: str
    task: str
    label_names: list[str]
    track_ids: list[str]
    sources: list[str]
    labels: np.ndarray
    fold_names: list[str] | None  # what fold_from_name is searched in (file names); None: not files
    official: list[str] | None = None  # the dataset's own split, if it has one
    official_info: dict | None = None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)  # extra split_info entries
    user_labels: bool = False  # labels come from the user's data: a label missing from train is an error


Lister = Callable[[Any, AdapterOptions, Problems], Listing]
"""``(source, options, problems) -> Listing``: lists and validates, never decodes. The options have
the adapter's defaults applied and passed ``AdapterOptions.problems``; problems found are added
and raised together (``Problems.raise_if_any``)."""


@dataclasses.dataclass(frozen=True)
class Adapter:
    """One dataset adapter: how it lists a source, and what the dataset brings with it.

    Attributes:
        name: The name users give (``--dataset``).
        lister: Lists the dataset (see ``Lister``).
        summary: A few words for the help: what the source is.
        official: The dataset has its own split (split files, a CSV column, a naming rule), used
            unless folds or ``split="random"`` are asked for.
        generated: Embedded and generated: no source, no file names; the corpus-size options apply.
        fold_pattern: The dataset's official folds are written in its file names: the default of
            ``fold_from_name`` (with ``fold=default_fold``) unless folds or split is given.
        default_fold: The test fold with ``fold_pattern`` when none is given.
        defaults: Values for options left None (the size of a generated corpus).
        label_groups: Returns label -> group (e.g. a tag's level of abstraction), groups in
            the order to report them; None: the dataset does not group its labels.
        soundfont: Rendered through a SoundFont: the ``soundfont`` options apply.
        pin: Given the options (defaults applied), the option values that fix the identity of the
            files they name by path (synth-gm: ``soundfont_sha256``), for prepare to hash with its
            config; raises a ``MsaggError`` naming a file that is missing, unreadable, or no longer
            the one the options pinned. None: nothing to pin.
    """

    name: str
    lister: Lister
    summary: str
    official: bool = False
    generated: bool = False
    fold_pattern: str | None = None
    default_fold: int = 1
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    label_groups: Callable[[], Mapping[str, str]] | None = None
    soundfont: bool = False
    pin: Callable[[AdapterOptions], Mapping[str, Any]] | None = None

    def with_defaults(self, options: AdapterOptions) -> AdapterOptions:
        """The options with this dataset's defaults in place of the values left None."""
        changes = {key: value for key, value in self.defaults.items() if getattr(options, key) is None}
        if self.fold_pattern is not None and options.folds is None and options.split is None:
            if options.fold_from_name is None:
                changes["fold_from_name"] = self.fold_pattern
            if options.fold is None:
                changes["fold"] = self.default_fold
        return options.adapter_options(**changes)

    def crossval_fold(self, fold: int, num_folds: int, fold_from_name: str | None = None) -> dict[str, int]:
        """The options that make ``fold`` the test split of a ``num_folds``-fold cross-validation.

        The official folds written in the file names where there are some (``fold_from_name``,
        or this dataset's own pattern), else stratified k-fold (drawn with ``split_seed``).
        """
        if fold_from_name is not None or self.fold_pattern is not None:
            return {"fold": fold}
        return {"folds": num_folds, "fold": fold}


# ---------------------------------------------------------------------------------------------
# Helpers of the listers


def existing(paths: Sequence[str]) -> np.ndarray:
    """Whether each path is an existing non-folder entry: one os.scandir per distinct folder."""
    listings: dict[str, set[str]] = {}
    found = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        folder, base = os.path.split(p)
        names = listings.get(folder)
        if names is None:
            try:
                with os.scandir(folder or ".") as it:
                    names = {e.name for e in it if not e.is_dir()}
            except OSError:
                names = set()
            listings[folder] = names
        found[i] = base in names
    return found


def is_audio(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS)


def one_hot(indices: Sequence[int], num_labels: int) -> np.ndarray:
    labels = np.zeros((len(indices), num_labels), dtype=np.uint8)
    labels[np.arange(len(indices)), np.asarray(indices, dtype=np.int64)] = 1
    return labels


def duplicates(ids: Sequence[str], where: Sequence[str], problems: Problems) -> None:
    """Adds a "duplicate track id" problem for every id found more than once, with where it was."""
    counts = Counter(ids)
    if len(counts) == len(ids):
        return
    places: dict[str, list[str]] = {}
    for tid, w in zip(ids, where):
        if counts[tid] > 1:
            places.setdefault(tid, []).append(w)
    for tid, ws in places.items():
        problems.add("duplicate track id", f"'{escape_name(tid)}' ({', '.join(escape_name(w) for w in ws)})")


def source_dir(source, problems: Problems, what: str) -> Path | None:
    """The source as an existing folder, or None with a problem that says what to give."""
    if source is None:
        problems.add("no source", f"give the {what}")
        return None
    path = Path(source).expanduser()
    if not path.is_dir():
        why = "does not exist" if not path.exists() else "a file"
        problems.add("not a folder", f"{escape_name(path)} ({why}); give the {what}")
        return None
    return path


# ---------------------------------------------------------------------------------------------
# After listing: split, valid slice, top_k, label checks


def finish(adapter: Adapter, source, lst: Listing, opts: AdapterOptions, problems: Problems) -> TrackList:
    """Resolves the split of a listing, applies top_k, checks the labels and builds the TrackList.

    Raises:
        DatasetError: For an empty dataset, a split that cannot be made or has no train tracks,
            or user labels found only outside the train split.
    """
    if not lst.track_ids:
        problems.add("empty dataset", f"no tracks{skip_summary(lst.skipped)}")
        problems.raise_if_any()
    split_list, info = _resolve_split(lst, opts, problems)
    problems.raise_if_any()
    if "train" not in split_list:
        problems.add("no train tracks", f"{info.get('kind', '')} split: {splits_mod.split_counts(split_list)}")
        problems.raise_if_any()
    if "valid" not in split_list:
        split_list = _carve_valid(lst, split_list, info, opts.split_seed)
    if opts.top_k is not None:
        lst, split_list = _top_k(lst, split_list, int(opts.top_k))
        info["top_k"] = int(opts.top_k)
        info["counts"] = splits_mod.split_counts(split_list)
    split_arr = np.array(split_list)
    in_train = lst.labels[split_arr == "train"].any(axis=0)
    anywhere = lst.labels.any(axis=0)
    for j, label in enumerate(lst.label_names):
        if anywhere[j] and not in_train[j]:
            if lst.user_labels:
                problems.add("unknown label", f"{label!r} has tracks only outside the train split (cannot be learned)")
            else:
                logger.warning("%s: label %r has no track in the train split", lst.name, label)
        elif not anywhere[j]:
            logger.warning("%s: label %r has no track", lst.name, label)
    problems.raise_if_any()

    info = {"adapter": adapter.name, "source": None if source is None else str(source), **info, **lst.info}
    tl = TrackList(
        name=lst.name,
        task=lst.task,
        label_names=list(lst.label_names),
        track_ids=list(lst.track_ids),
        sources=list(lst.sources),
        labels=np.ascontiguousarray(lst.labels, dtype=np.uint8),
        split=[str(s) for s in split_list],
        split_info=info,
        skipped=list(lst.skipped),
    )
    logger.info(
        "%s: %d tracks %s, %d labels (%s)%s",
        tl.name, len(tl), info.get("counts"), len(tl.label_names), tl.task, skip_summary(tl.skipped),
    )  # fmt: skip
    return tl


def label_warnings(tracklist: TrackList) -> list[str]:
    """What in a track list's labels no model can learn, one sentence each (prepare logs them as
    warnings and records them in its DONE summary).

    A classes task with tracks of fewer than two classes in the train split (one class folder, a
    CSV of one genre): every output is that class, the loss is 0 from the start, and pretrain
    refuses the cache. Labels no train track carries (any task): named.

    Returns:
        The warnings, [] when every label has train tracks and a classes task has at least two.
    """
    labels = np.asarray(tracklist.labels).reshape(len(tracklist.track_ids), len(tracklist.label_names))
    present = labels[np.asarray(tracklist.split) == "train"].any(axis=0)
    names = [escape_name(n) for n in tracklist.label_names]
    what = "tags" if tracklist.task == "tags" else "classes"
    notes = []
    if tracklist.task == "classes" and present.sum() < 2:
        held = ", ".join(n for n, p in zip(names, present) if p) or "none"
        notes.append(f"{tracklist.name}: the train split holds tracks of {int(present.sum())} class ({held}); nothing "
                     "can be learned from fewer than 2 classes, and pretrain refuses this cache")
    missing = [n for n, p in zip(names, present) if not p]
    if missing:
        notes.append(f"{tracklist.name}: {len(missing)} of {len(names)} {what} never occur in the train split, so no "
                     f"model learns them: {', '.join(missing[:MAX_SHOWN_PER_KIND])}"
                     + (f" and {len(missing) - MAX_SHOWN_PER_KIND} more" if len(missing) > MAX_SHOWN_PER_KIND else ""))
    for note in notes:
        logger.warning("%s", note)
    return notes


def _resolve_split(lst: Listing, opts: AdapterOptions, problems: Problems) -> tuple[list[str], dict]:
    try:
        if opts.fold_from_name is not None:
            return splits_mod.folds_from_names(
                lst.fold_names, opts.fold_from_name, opts.fold,
                valid=opts.fold_valid, labels=lst.labels, task=lst.task, seed=opts.split_seed,
            )  # fmt: skip
        if opts.folds is not None:
            return splits_mod.kfold(lst.labels, lst.task, opts.folds, opts.fold, seed=opts.split_seed)
        if lst.official is not None and opts.own_split:
            split, info = list(lst.official), dict(lst.official_info)
            info["counts"] = splits_mod.split_counts(split)
            return split, info
        return splits_mod.stratified_split(lst.labels, lst.task, seed=opts.split_seed)
    except ValueError as err:
        problems.add("bad split", str(err))
        return [], {}


def _carve_valid(lst: Listing, split: list[str], info: dict, seed: int) -> list[str]:
    """An official split without valid tracks: a stratified slice of train becomes valid."""
    train = np.flatnonzero(np.array(split) == "train")
    fraction = splits_mod.KFOLD_VALID_FRACTION
    sub, _ = splits_mod.stratified_split(
        lst.labels[train], lst.task, fractions=(1 - fraction, fraction, 0), seed=seed
    )
    split = list(split)
    for i, s in zip(train, sub):
        split[i] = s
    info["valid"] = {"kind": "stratified slice of train", "fraction": fraction, "seed": int(seed)}
    info["counts"] = splits_mod.split_counts(split)
    return split


def _top_k(lst: Listing, split: list[str], k: int) -> tuple[Listing, list[str]]:
    """Keeps the k labels most frequent in train (ties by name), in that order.

    Tags: every track is kept, even one left without any kept tag: it is a negative example
    for every tag, and dropping it would make the track list depend on k. (The committed MTAT
    split was made the other way, without clips lacking a top-50 tag.)
    Classes: tracks of the other classes go to ``skipped``.
    """
    counts = lst.labels[np.array(split) == "train"].sum(axis=0)
    order = sorted(range(len(lst.label_names)), key=lambda j: (-int(counts[j]), lst.label_names[j]))[:k]
    labels = lst.labels[:, order]
    keep = np.ones(len(lst.track_ids), dtype=bool) if lst.task == "tags" else labels.any(axis=1)
    skipped = list(lst.skipped)
    for i in np.flatnonzero(~keep):
        cls = lst.label_names[int(np.argmax(lst.labels[i]))]
        skipped.append((lst.sources[i], f"class {cls!r} not among the top {k}"))
    out = dataclasses.replace(
        lst,
        label_names=[lst.label_names[j] for j in order],
        track_ids=[t for t, ok in zip(lst.track_ids, keep) if ok],
        sources=[s for s, ok in zip(lst.sources, keep) if ok],
        labels=labels[keep],
        skipped=skipped,
    )
    return out, [s for s, ok in zip(split, keep) if ok]


def skip_summary(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    reasons = Counter(reason for _, reason in skipped)
    return f" ({len(skipped)} skipped: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()) + ")"
