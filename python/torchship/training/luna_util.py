"""What the part 2 training apps share: the book's progress estimate, run naming and TensorBoard writers."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def time_str() -> str:
    """The book's run stamp, ``%Y-%m-%d_%H.%M.%S``."""
    return datetime.datetime.now().strftime("%Y-%m-%d_%H.%M.%S")


def enumerate_with_estimate(
    items: Iterable[T],
    desc: str,
    start_ndx: int = 0,
    print_ndx: int = 4,
    backoff: int | None = None,
    iter_len: int | None = None,
    emit=log.info,
) -> Iterator[tuple[int, T]]:
    """``enumerate`` that logs progress and the estimated finish at iterations 4, 8, 16, ... (chapter 11).

    ``start_ndx`` skips the first iterations in the estimate (the book passes the
    DataLoader's worker count: their first batches arrive together and would skew
    it). ``backoff`` defaults to the smallest power of two with ``backoff**7 >= iter_len``,
    so a long loop logs about as often as a short one.
    """
    if iter_len is None:
        iter_len = len(items)  # type: ignore[arg-type]
    if backoff is None:
        backoff = 2
        while backoff**7 < iter_len:
            backoff *= 2
    emit(f"{desc} ----/{iter_len}, starting")
    start_ts = time.time()
    for current_ndx, item in enumerate(items):
        yield current_ndx, item
        if current_ndx == print_ndx:
            # Seconds per item so far, times what is left, counting from start_ndx.
            duration_sec = (time.time() - start_ts) / (current_ndx - start_ndx + 1) * (iter_len - start_ndx)
            done_dt = datetime.datetime.fromtimestamp(start_ts + duration_sec)
            emit(
                f"{desc} {current_ndx:-4}/{iter_len}, done at {done_dt.strftime('%Y-%m-%d %H:%M:%S')}, "
                f"{datetime.timedelta(seconds=round(duration_sec))!s}"
            )
            print_ndx *= backoff
        if current_ndx + 1 == start_ndx:
            start_ts = time.time()
    emit(f"{desc} ----/{iter_len}, done at {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}")


def tensorboard_writers(tb_dir: str | None, tb_prefix: str, stamp: str, kind: str, comment: str) -> dict[str, Any]:
    """``runs/<tb_prefix>/<time>-trn_<kind>-<comment>`` and ``-val_<kind>-``, or {} when disabled."""
    if not tb_dir:
        return {}
    from torch.utils.tensorboard import SummaryWriter

    base = Path(tb_dir) / tb_prefix
    return {split: SummaryWriter(log_dir=str(base / f"{stamp}-{split}_{kind}-{comment}")) for split in ("trn", "val")}
