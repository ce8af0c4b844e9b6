"""tfds_oregon.archive: finding the download, reading zip or folder, detecting the layout."""

from __future__ import annotations

import zipfile

import pytest

from tfds_oregon import archive

NESTED = "oregon_wildlife/oregon_wildlife"


def _write_zip(path, names: list[str]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, f"bytes of {name}")
    return str(path)


@pytest.mark.parametrize("root", [NESTED, "oregon_wildlife", "renamed/deeper/folder", ""])
def test_layout_is_found_under_any_root(root):
    prefix = f"{root}/" if root else ""
    paths = [
        f"{prefix}elk/0a.jpg",
        f"{prefix}elk/.DS_Store",
        f"{prefix}raven/0b.PNG",
        f"{prefix}raven/notes.txt",
        "__MACOSX/x/._0a.jpg",
        "oregon_wildlife.h5",
    ]
    layout = archive.detect_layout(paths)
    assert layout.root == root
    assert [(e.label, e.file_name) for e in layout.entries] == [
        ("elk", "elk/0a.jpg"),
        ("raven", "raven/0b.PNG"),
    ]
    assert sorted(layout.ignored) == sorted(set(paths) - {e.path for e in layout.entries})


def test_unknown_class_folders_are_listed():
    paths = [f"{NESTED}/elk/a.jpg", f"{NESTED}/unicorn/b.jpg", f"{NESTED}/dragons/c.jpg"]
    with pytest.raises(archive.SourceError, match="unknown class folders.*dragons, unicorn"):
        archive.detect_layout(paths)


def test_archive_of_other_things_reports_its_folders():
    with pytest.raises(archive.SourceError, match="unknown class folders.*cats, dogs"):
        archive.detect_layout(["stuff/cats/a.jpg", "stuff/dogs/b.jpg"])


@pytest.mark.parametrize("paths", [[], ["a.jpg", "readme.txt"], ["x/.DS_Store", "x/y.h5"]])
def test_no_class_folders_is_an_error(paths):
    with pytest.raises(archive.SourceError, match="no class folders"):
        archive.detect_layout(paths)


def test_zip_and_extracted_folder_read_the_same(tmp_path):
    names = [f"{NESTED}/elk/a.jpg", f"{NESTED}/elk/.DS_Store", f"{NESTED}/raven/b.gif"]
    zip_path = _write_zip(tmp_path / "oregon-wildlife.zip", names)
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
    with archive.Source(zip_path) as from_zip, archive.Source(str(folder)) as from_folder:
        assert from_zip.files() == from_folder.files() == sorted(names)
        for name in names:
            assert from_zip.read(name) == from_folder.read(name) == f"bytes of {name}".encode()


def test_locate_prefers_the_kaggle_zip_names(tmp_path):
    _write_zip(tmp_path / "archive.zip", ["oregon_wildlife/elk/a.jpg"])
    assert archive.locate(str(tmp_path)) == str(tmp_path / "archive.zip")
    _write_zip(tmp_path / "oregon-wildlife.zip", ["oregon_wildlife/elk/a.jpg"])
    assert archive.locate(str(tmp_path)) == str(tmp_path / "oregon-wildlife.zip")


def test_locate_accepts_an_extracted_folder(tmp_path):
    (tmp_path / "oregon_wildlife" / "elk").mkdir(parents=True)
    assert archive.locate(str(tmp_path)) == str(tmp_path / "oregon_wildlife")
    (tmp_path / "bare" / "elk").mkdir(parents=True)
    assert archive.locate(str(tmp_path / "bare")) == str(tmp_path / "bare")


@pytest.mark.parametrize("with_other_zip", [False, True])
def test_locate_without_an_archive_names_the_download_command(tmp_path, with_other_zip):
    manual_dir = tmp_path / "manual"
    if with_other_zip:
        manual_dir.mkdir()
        (manual_dir / "other.zip").write_bytes(b"x")
    with pytest.raises(archive.SourceError) as error:
        archive.locate(str(manual_dir))
    message = str(error.value)
    assert archive.DOWNLOAD_COMMAND in message
    assert str(manual_dir / "oregon-wildlife.zip") in message
    assert "\n" not in message


def test_corrupt_zip_is_a_source_error(tmp_path):
    path = tmp_path / "oregon-wildlife.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    with (
        pytest.raises(archive.SourceError, match="not a readable zip.*download again"),
        archive.Source(str(path)),
    ):
        pass
