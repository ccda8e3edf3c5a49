"""Writing a file or a folder all at once, so that an error, Ctrl-C or SIGTERM leaves nothing half-written.

A file is written under a hidden name beside its target and renamed onto it (a rename within one
folder is atomic on POSIX). A folder is built under a hidden name beside its destination and
renamed into place, or, when the destination already exists, its entries are moved in one by one.
Every command writes through these two, so the hidden names they leave on failure are none.
"""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

NIFTI_GZ = ".nii.gz"


def _token() -> str:
    return uuid.uuid4().hex[:8]


def _ending(name: str) -> str:
    """The ending writers dispatch on (`.nii.gz` counts as one), kept by the temporary name."""
    return NIFTI_GZ if name.endswith(NIFTI_GZ) else Path(name).suffix


def writable_folder(folder: str | os.PathLike) -> Path:
    """`folder`, after checking that it (or its nearest existing parent, where it would be created)
    is a folder this process may write into: the refusal names `folder`, never a hidden build name.

    Raises:
        NotADirectoryError: a file stands where the folder (or a parent) should be.
        PermissionError: no write permission there.
    """
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "a file stands where this folder should be; choose another path",
                                 str(folder if existing == folder else existing))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied: cannot write into it", str(existing))
    return folder


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns the ones created, deepest first."""
    created = []
    missing = folder
    while not missing.exists():
        created.append(missing)
        missing = missing.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _named_visibly(error: OSError, hidden: Path, visible: Path) -> OSError:
    """`error` naming `visible` where it named the hidden build path: users never see hidden names."""
    name = error.filename
    if isinstance(name, (str, os.PathLike)) and str(name).startswith(str(hidden)) and error.strerror:
        return type(error)(error.errno, error.strerror, str(visible) + str(name)[len(str(hidden)):])
    return error


def _remove_empty(folders: Iterable[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a hidden temporary path beside `path` (same ending, so writers pick the same format);
    renamed onto `path` when the block succeeds, deleted when it fails. Missing parent folders are
    created, and removed again on failure."""
    path = Path(path)
    created = _make_parents(writable_folder(path.parent))
    tmp = path.with_name(f".{path.name}.partial-{_token()}{_ending(path.name)}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        if isinstance(error, OSError):
            raise _named_visibly(error, tmp, path) from None
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through `atomic_file`."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def atomic_folder(destination: str | os.PathLike, *, replaces: Iterable[str | os.PathLike] = (),
                  merge: bool = False, owned: Iterable[str] = ()) -> Iterator[Path]:
    """Yields a fresh hidden folder beside `destination` to build in; publishes it when the block
    succeeds and deletes it when it fails (including Ctrl-C and SIGTERM raised as an exception).

    Publishing: the folders in `replaces` (which may include `destination`) are moved aside, the
    build is renamed to `destination` and the old folders are deleted (put back if the rename
    fails). With `merge`, an existing `destination` that is not replaced is kept with its other
    files: the built entries are moved into it one by one, and the names in `owned` that this build
    did not produce (outputs of an earlier run) are removed from it.

    Raises:
        FileExistsError: `destination` exists, is not replaced, and `merge` is false.
    """
    destination = writable_folder(destination)
    replaced = [Path(p).absolute() for p in replaces if Path(p).exists()]
    created = _make_parents(destination.parent)
    build = destination.with_name(f".{destination.name}.partial-{_token()}")
    try:
        build.mkdir()
        yield build
        if destination.exists() and destination not in replaced:
            if not merge:
                raise FileExistsError(errno.EEXIST, "appeared while it was being built; nothing was replaced",
                                      str(destination))
            _merge(build, destination, owned)
        else:
            _swap(build, destination, replaced)
    except BaseException as error:
        shutil.rmtree(build, ignore_errors=True)
        _remove_empty(created)
        if isinstance(error, OSError):
            raise _named_visibly(error, build, destination) from None
        raise


def _merge(build: Path, destination: Path, owned: Iterable[str]) -> None:
    names = {entry.name for entry in build.iterdir()}
    for name in sorted(names):
        target = destination / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(build / name, target)
    for name in set(owned) - names:
        stale = destination / name
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    build.rmdir()


def _swap(build: Path, destination: Path, replaced: list[Path]) -> None:
    parked: list[tuple[Path, Path]] = []
    try:
        for old in replaced:
            hidden = old.with_name(f".{old.name}.replaced-{_token()}")
            os.rename(old, hidden)
            parked.append((old, hidden))
        os.rename(build, destination)
    except BaseException:
        for old, hidden in reversed(parked):
            os.rename(hidden, old)
        raise
    for _, hidden in parked:
        shutil.rmtree(hidden, ignore_errors=True)
