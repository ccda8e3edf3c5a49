"""files: a file or a folder is published whole or not at all, and errors name visible paths."""
from __future__ import annotations

import errno
import os

import pytest

from mqsm_nnunet.io.files import atomic_file, atomic_folder, write_text_atomic, writable_folder


def hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "first" and hidden(tmp_path) == []


def test_atomic_file_keeps_the_ending_and_removes_parents_it_made(tmp_path):
    target = tmp_path / "new" / "deeper" / "map.nii.gz"
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()


def test_atomic_folder_publishes_a_new_folder_at_once(tmp_path):
    destination = tmp_path / "out"
    with atomic_folder(destination) as build:
        (build / "x.csv").write_text("1")
        assert not destination.exists()
    assert [p.name for p in destination.iterdir()] == ["x.csv"] and hidden(tmp_path) == []


def test_merge_keeps_other_files_and_removes_stale_outputs(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "mine.txt").write_text("user file")
    (destination / "old.csv").write_text("earlier run")
    with atomic_folder(destination, merge=True, owned=("old.csv", "new.csv")) as build:
        (build / "new.csv").write_text("2")
    assert sorted(p.name for p in destination.iterdir()) == ["mine.txt", "new.csv"]


def test_replaces_are_swapped_in_one_rename(tmp_path):
    old = tmp_path / "Dataset001_Old"
    old.mkdir()
    (old / "dataset.json").write_text("{}")
    with atomic_folder(tmp_path / "Dataset001_New", replaces=[old]) as build:
        (build / "dataset.json").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_New"]


def test_an_existing_destination_is_not_merged_unless_asked(tmp_path):
    destination = tmp_path / "out"
    destination.mkdir()
    with pytest.raises(FileExistsError):
        with atomic_folder(destination):
            pass
    assert hidden(tmp_path) == []


def test_failure_leaves_nothing_and_names_the_destination(tmp_path):
    destination = tmp_path / "made" / "out"
    with pytest.raises(PermissionError) as error:
        with atomic_folder(destination) as build:
            raise PermissionError(errno.EACCES, "Permission denied", str(build / "sub"))
    assert error.value.filename == str(destination / "sub")  # the hidden build name is never shown
    assert not (tmp_path / "made").exists()


def test_writable_folder_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        writable_folder(tmp_path / "file" / "out")
    assert writable_folder(tmp_path / "a" / "b") == (tmp_path / "a" / "b").absolute()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere; tests/cli/test_bad_input.py locks a folder")
def test_writable_folder_refuses_a_read_only_parent(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=str(tmp_path)):
            writable_folder(tmp_path / "out")
    finally:
        tmp_path.chmod(0o755)
