"""Chapter 10's caches: the last CT in memory, crops on disk (diskcache, as the book's ``raw_cache``).

Reading a whole CT to cut one 32x48x48 chunk is the slow part of an epoch (the
book measures ~50x); the chunk is cached on disk under a key made of the series,
the centre, the crop size and the *source files' fingerprint* (size and mtime of
the ``.mhd`` and ``.raw``) plus ``CACHE_FORMAT``. The invalidation rule: a
re-written or replaced scan has a new fingerprint, so its old crops are never
hit again (diskcache evicts them when the cache passes ``size_limit_bytes``);
a change of crop code bumps ``CACHE_FORMAT``. Deleting the folder is always safe.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from torchship.data.luna.ct import Ct
from torchship.data.luna.geometry import IrcTuple
from torchship.data.luna.layout import LunaLayout

CACHE_FORMAT = 1
DEFAULT_SIZE_LIMIT_BYTES = 4 * 2**30


class CtSource:
    """CTs of one LUNA layout: the last ``max_cts`` read stay in memory (the book's ``lru_cache(1)``).

    A real CT is ~250 MB as float32, hence the book's 1; small generated scans can keep more.
    """

    def __init__(self, layout: LunaLayout, max_cts: int = 1) -> None:
        if max_cts < 1:
            raise ValueError(f"max_cts must be at least 1, got {max_cts}")
        self.layout = layout
        self.max_cts = max_cts
        self._recent: OrderedDict[str, Ct] = OrderedDict()
        self.reads = 0

    def ct(self, series_uid: str) -> Ct:
        found = self._recent.get(series_uid)
        if found is not None:
            self._recent.move_to_end(series_uid)
            return found
        ct = Ct(series_uid, self.layout.mhd_path(series_uid))
        self.reads += 1
        self._recent[series_uid] = ct
        while len(self._recent) > self.max_cts:
            self._recent.popitem(last=False)
        return ct

    def fingerprint(self, series_uid: str) -> tuple[int, int, int, int]:
        mhd = self.layout.mhd_path(series_uid)
        raw = mhd.with_suffix(".raw")
        m, r = mhd.stat(), (raw.stat() if raw.exists() else mhd.stat())
        return (m.st_size, m.st_mtime_ns, r.st_size, r.st_mtime_ns)


class CropCache:
    """``get(series_uid, center_xyz, width_irc)`` -> (chunk, centre voxel), from disk when cached.

    ``directory=None`` disables the disk cache (every crop is cut from the CT).
    ``hits`` and ``misses`` count this object's lookups.
    """

    def __init__(
        self, source: CtSource, directory: Path | None, size_limit_bytes: int = DEFAULT_SIZE_LIMIT_BYTES
    ) -> None:
        self.source = source
        self.hits = 0
        self.misses = 0
        self._disk = None
        if directory is not None:
            import diskcache

            self._disk = diskcache.Cache(str(directory), size_limit=size_limit_bytes)

    def get(
        self, series_uid: str, center_xyz: tuple[float, float, float], width_irc: tuple[int, int, int]
    ) -> tuple[np.ndarray, IrcTuple]:
        if self._disk is None:
            self.misses += 1
            return self.source.ct(series_uid).get_raw_candidate(center_xyz, width_irc)
        key = (
            "crop",
            CACHE_FORMAT,
            series_uid,
            self.source.fingerprint(series_uid),
            tuple(float(v) for v in center_xyz),
            tuple(int(v) for v in width_irc),
        )
        found = self._disk.get(key)
        if found is not None:
            self.hits += 1
            chunk, center_irc = found
            return chunk, IrcTuple(*center_irc)
        self.misses += 1
        chunk, center_irc = self.source.ct(series_uid).get_raw_candidate(center_xyz, width_irc)
        self._disk.set(key, (chunk, tuple(center_irc)))
        return chunk, center_irc

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
