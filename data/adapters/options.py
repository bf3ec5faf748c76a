"""The adapters' options: one frozen dataclass (help texts in the field metadata) and their one check.

``AdapterOptions`` is the only place an adapter option is spelled: ``msagg.stages.prepare.Config``
inherits it (so config files and ``--set`` use the same keys), ``make_tracklist`` takes it, and
the CLI makes one option per field from the field's ``metadata["help"]``. ``problems`` is the only
place their values and how they combine (folds, fold, fold_from_name, split, and the dataset's own
defaults) are checked; prepare's Config, the adapters and the CLI all rely on it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the type hints: common imports this module
    from msagg.data.adapters.common import Adapter

SPLIT_KINDS = ("official", "random")
FOLD_VALID = ("next", "slice")


def _option(default: Any, help: str, *, generated: bool = False, path: bool = False) -> Any:
    """A field whose metadata holds its help text, whether only generated datasets use it, and whether it is a path."""
    metadata = {"help": help, "generated": generated, **({"path": True} if path else {})}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdapterOptions:
    """How to list a dataset: the size of a generated corpus, and how to split the tracks.

    Every field's help text is ``dataclasses.fields(AdapterOptions)[i].metadata["help"]``. Values
    are checked by ``problems`` (construction never fails, so that an adapter can list every
    problem at once). None means the dataset's default.
    """

    num_tracks: int | None = _option(
        None, "Generated datasets (synth-*): how many tracks (default 300).", generated=True)
    seed: int | None = _option(
        None, "Generated datasets: corpus seed (default 0; synth-genre and synth-gm-genre add 1000, so they hold "
        "other songs).", generated=True)
    min_sec: float | None = _option(
        None, "Generated datasets: shortest track, seconds (default 10).", generated=True)
    max_sec: float | None = _option(
        None, "Generated datasets: longest track, seconds (default 30).", generated=True)
    soundfont: str | None = _option(
        None, "synth-gm-tags, synth-gm-genre: the General MIDI SoundFont (.sf2) to render with (default: "
        "TimGM6mb.sf2, which comes with pretty_midi). Example: --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2.",
        path=True)
    soundfont_sha256: str | None = _option(
        None, "synth-gm-*: the SoundFont's sha256 (64 hex digits); prepare fills it in from the file and records it "
        "in config.json, so a cache is never resumed or reused with another SoundFont. Given, the file must match.")
    split_seed: int = _option(
        0, "Seed of a stratified split, of the k-fold assignment, or of a valid slice (recorded in the cache).")
    folds: int | None = _option(
        None, "k-fold cross-validation: number of folds, drawn stratified with split_seed (with fold).")
    fold: int | None = _option(
        None, "The test fold: 1..folds, or the fold as written in the file names with fold_from_name "
        "(esc10: 1 unless given).")
    fold_from_name: str | None = _option(
        None, r"Regex whose first group, searched in each file name, is the file's official fold, e.g. "
        r"'^(\d+)-' (esc10's default).")
    top_k: int | None = _option(
        None, "Keep the K labels most frequent in the train split (csv, mtat).")
    split: str | None = _option(
        None, "'official' (the committed split of gtzan, mtat, fsdd, or a csv's split column; the default "
        "where one exists) or 'random' (stratified with split_seed).")
    fold_valid: str = _option(
        "next", "With folds from file names: 'next' (valid = the next fold, train = the others) or 'slice' "
        "(valid = a stratified slice of the other folds: closer to the published protocols, but clips cut "
        "from one recording may sit in train and valid).")

    def adapter_options(self, **changes: Any) -> AdapterOptions:
        """These options as a plain AdapterOptions (also from a subclass such as prepare's Config)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(AdapterOptions)}
        return AdapterOptions(**{**values, **changes})

    @property
    def own_split(self) -> bool:
        """Whether a dataset's own split (where it has one) is used: no folds and split is not 'random'."""
        return self.folds is None and self.fold_from_name is None and self.split != "random"

    def problems(self, adapter: Adapter | None = None) -> list[str]:
        """Every problem with these options for one dataset, its defaults applied first.

        Args:
            adapter: The dataset (None: a dataset the registry does not know; only the rules that
                hold for every dataset are checked).

        Returns:
            One message per problem, naming the option and its value; empty when all is well.
        """
        o = adapter.with_defaults(self) if adapter is not None else self
        generated = adapter is not None and adapter.generated
        name = adapter.name if adapter is not None else "the dataset"
        found = []
        for key in ("num_tracks", "top_k"):
            value = getattr(o, key)
            if value is not None and not (_is_int(value) and value >= 1):
                found.append(f"{key} must be a positive integer, got {key}={value!r}")
        for key in ("seed", "split_seed"):  # split_seed has no None: every drawn split records its seed
            value = getattr(o, key)
            if (value is not None or key == "split_seed") and not (_is_int(value) and value >= 0):
                found.append(f"{key} must be an integer >= 0, got {key}={value!r}")
        for key in ("min_sec", "max_sec"):
            value = getattr(o, key)
            if value is not None and not (_is_number(value) and value > 0):
                found.append(f"{key} must be a number of seconds > 0, got {key}={value!r}")
        if _is_number(o.min_sec) and _is_number(o.max_sec) and 0 < o.max_sec < o.min_sec:
            found.append(f"need 0 < min_sec <= max_sec, got min_sec={o.min_sec!r} and max_sec={o.max_sec!r}")

        if o.soundfont is not None and not (isinstance(o.soundfont, str) and o.soundfont.strip()):
            found.append(f"soundfont must be the path of a .sf2 file (or None: the default), got "
                         f"soundfont={o.soundfont!r}")
        if o.soundfont_sha256 is not None and not (isinstance(o.soundfont_sha256, str)
                                                   and re.fullmatch(r"[0-9a-f]{64}", o.soundfont_sha256)):
            found.append("soundfont_sha256 must be 64 lower-case hex digits (or None: taken from the file), got "
                         f"soundfont_sha256={o.soundfont_sha256!r}")
        if adapter is not None and not adapter.soundfont:
            for key in ("soundfont", "soundfont_sha256"):
                if getattr(o, key) is not None:
                    found.append(f"{key}={getattr(o, key)!r}: only synth-gm-tags and synth-gm-genre render through a "
                                 f"SoundFont; {name} does not")

        if o.folds is not None and not (_is_int(o.folds) and o.folds >= 2):
            found.append(f"folds must be an integer >= 2 (or None: no k-fold), got folds={o.folds!r}")
        if o.fold_from_name is not None:
            found += _pattern_problems(o.fold_from_name)
            if generated:
                found.append(f"fold_from_name={o.fold_from_name!r}: {name} is generated, it has no file names")
        if o.folds is not None and o.fold_from_name is not None:
            found.append("give either fold_from_name (folds named in file names) or folds (k-fold), not both; "
                         f"got folds={o.folds!r} and fold_from_name={o.fold_from_name!r}")
        if o.split is not None and o.split not in SPLIT_KINDS:
            found.append("split must be 'official' or 'random' (or None: the dataset's own split where it has "
                         f"one), got split={o.split!r}")
        elif o.split == "official" and adapter is not None and not adapter.official:
            found.append(f"split='official': {name} has no official split; leave split unset for its default one")
        if o.split is not None and (o.folds is not None or o.fold_from_name is not None):
            found.append(f"split={o.split!r} cannot be combined with folds or fold_from_name")

        if o.fold is None:
            if o.folds is not None or o.fold_from_name is not None:
                found.append("fold=None: must say which fold is the test split when folds or fold_from_name is given")
        elif o.folds is None and o.fold_from_name is None:
            if generated:
                found.append(f"fold={o.fold!r}: needs folds (k-fold cross-validation); {name} is generated, "
                             "it has no file names to read folds from")
            else:
                found.append(f"fold={o.fold!r} needs folds (k-fold cross-validation) or fold_from_name "
                             "(folds in file names)")
        elif o.folds is not None:
            if _is_int(o.folds) and not (_is_int(o.fold) and 1 <= o.fold <= o.folds):
                found.append(f"fold={o.fold!r}: must be between 1 and folds={o.folds} (folds are numbered from 1)")
        elif not (_is_int(o.fold) or isinstance(o.fold, str)):
            found.append(f"fold={o.fold!r}: must be a fold as written in the file names (an integer or a string)")
        if o.fold_valid not in FOLD_VALID:
            found.append(f"fold_valid must be 'next' or 'slice', got fold_valid={o.fold_valid!r}")
        return found


GENERATED_ONLY = tuple(f.name for f in dataclasses.fields(AdapterOptions) if f.metadata["generated"])
"""Options only generated datasets use (the corpus size); other datasets ignore them."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _pattern_problems(pattern: Any) -> list[str]:
    if not isinstance(pattern, str):
        return [f"fold_from_name must be a regular expression, got fold_from_name={pattern!r}"]
    try:
        groups = re.compile(pattern).groups
    except re.error as err:
        return [f"fold_from_name={pattern!r}: not a valid regular expression ({err})"]
    if groups < 1:
        return [f"fold_from_name={pattern!r} needs a group that captures the fold, e.g. '^(\\d+)-'"]
    return []
