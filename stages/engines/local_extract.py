"""extract's local engine: the tap models loaded in this process, the rows computed here."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

from msagg.data.formats.cache import AudioCache
from msagg.stages.engines import taps
from msagg.stages.runs.pretrain_run import PretrainRun


@contextlib.contextmanager
def connect(config: Any) -> Iterator[None]:
    """Nothing to start: this process computes."""
    yield None


class LocalExtractor:
    """The models of ``scales`` loaded once; rows computed in this process (``taps.extract_rows``)."""

    def __init__(self, config: Any, cache: AudioCache, pretrain: PretrainRun, scales: Sequence[str], batch_size: int):
        self.config, self.cache, self.batch_size = config, cache, batch_size
        self.models = taps.load_tap_models(pretrain, scales, precision=config.precision)

    def scale_infos(self) -> Mapping[str, Any]:
        return taps.scale_infos(self.models, self.config.song_pool)

    def rows(self, start: int) -> Iterator[tuple[int, dict, dict, dict]]:
        return taps.extract_rows(self.cache, self.models, self.config, range(start, self.cache.num_tracks),
                                 self.batch_size)

    def summary(self) -> dict:
        return {}


@contextlib.contextmanager
def extractor(connection: None, config: Any, cache: AudioCache, pretrain: PretrainRun, scales: Sequence[str],
              batch_size: int, **options) -> Iterator[LocalExtractor]:
    """The local extractor (it takes no options: they are the Ray engine's)."""
    if options:
        raise TypeError(f"the local engine takes no options, got {', '.join(sorted(options))}")
    yield LocalExtractor(config, cache, pretrain, scales, batch_size)
