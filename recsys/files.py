"""File mechanics every stage shares: reading a parquet file with an error that names it, writing a
file atomically, and swapping a staged folder in place of the one being served.

One implementation of each, so "nothing served is overwritten before the new one is complete" is
written once. May import only ``recsys.errors``.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from recsys.errors import DataError


def read_parquet(
    path: Path, columns: list[str] | None = None, fix: str = "write it again", filters: list | None = None
) -> pd.DataFrame:
    """A parquet file as a frame (``filters``: pyarrow's row filters); DataError naming the file
    (and ``fix``) when it cannot be read.

    A truncated or overwritten file raises pyarrow's own errors (ArrowInvalid, OSError) deep inside
    pandas: this names the file instead.
    """
    import pyarrow as pa

    try:
        return pd.read_parquet(path, columns=columns, filters=filters)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; {fix}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{path} is not a readable parquet file ({reason}); {fix}") from exc


@contextmanager
def atomic_path(path: Path, fix: str = "free space there or point paths.home elsewhere") -> Iterator[Path]:
    """A temp path beside ``path`` to write to; renamed over ``path`` when the block succeeds.

    Parallel writers never share a temp file; a reader sees the old file or the new one, never half
    of one. A failed write removes the temp file, leaves ``path`` untouched and raises DataError
    (for an OSError such as a full disk) naming the folder and ``fix``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        reason = exc.strerror or exc
        raise DataError(f"cannot write {path.name} into {path.parent} ({reason}); {fix}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def md5(*paths: Path) -> str:
    """md5 of the files' content, in order, read 1 MiB at a time."""
    digest = hashlib.md5()
    for path in paths:
        with Path(path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def write_text(text: str, path: Path) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def swap_in(staged: Path, target: Path, then: Callable[[Path], object] | None = None) -> None:
    """Put the folder ``staged`` in place of ``target`` with two renames; the old copy is removed
    last. ``then(target)`` (e.g. ``dvc add``) runs once the new folder is in place; if it or the
    rename fails, the old folder is put back and the error propagates."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    try:
        staged.rename(target)
        if then is not None:
            then(target)
    except BaseException:
        if old.exists():
            if target.exists() and not staged.exists():
                shutil.rmtree(target)
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
