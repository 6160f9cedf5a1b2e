"""The one way we write a file: to a temp name beside it, then rename, so a reader never sees half a file and a
re-run replaces the old one whole (os.replace is atomic on one filesystem)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path: Path, *, hidden: bool = False) -> Iterator[Path]:
    """Yield the temp path to write (`<name>.tmp`, or `.<name>.tmp` when `hidden`: for stores whose readers skip
    dot-files, as Spark's and our own do); on success it is renamed over `path`, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(("." if hidden else "") + path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data, *, hidden: bool = False) -> Path:
    with replacing(path, hidden=hidden) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path
