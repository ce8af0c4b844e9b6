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


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "oregon_wildlife\\oregon_wildlife\\elk\\a.jpg",
            "oregon_wildlife/oregon_wildlife/elk/a.jpg",
        ),
        ("./oregon_wildlife/elk/a.jpg", "oregon_wildlife/elk/a.jpg"),
        ("oregon_wildlife//elk///a.jpg", "oregon_wildlife/elk/a.jpg"),
        ("/oregon_wildlife/./elk/a.jpg", "oregon_wildlife/elk/a.jpg"),
    ],
)
def test_member_names_are_normalised(name, expected):
    assert archive.normalise(name) == expected


def test_windows_and_dot_slash_zips_find_their_class_folders(tmp_path):
    names = [
        "oregon_wildlife\\oregon_wildlife\\elk\\a.jpg",
        "./oregon_wildlife/oregon_wildlife/raven/b.jpg",
    ]
    path = _write_zip(tmp_path / "oregon-wildlife.zip", names)
    with archive.Source(path) as source:
        layout = archive.detect_layout(source.files())
        assert [e.file_name for e in layout.entries] == ["elk/a.jpg", "raven/b.jpg"]
        assert source.read(layout.entries[0].path) == f"bytes of {names[0]}".encode()


def _patch_member(path, name: str, *, flag_bits: int = 0, method: int | None = None,
                  crc_xor: int = 0) -> None:  # fmt: skip
    """Rewrites one member's local and central headers in place (zip spec, APPNOTE 4.3.7/12)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    for header, flags_at, method_at, crc_at in [
        (info.header_offset, 6, 8, 14),  # Local file header.
        (raw.index(name.encode(), raw.index(b"PK\x01\x02")) - 46, 8, 10, 16),  # Central.
    ]:
        raw[header + flags_at] |= flag_bits
        if method is not None:
            raw[header + method_at : header + method_at + 2] = method.to_bytes(2, "little")
        crc = int.from_bytes(raw[header + crc_at : header + crc_at + 4], "little") ^ crc_xor
        raw[header + crc_at : header + crc_at + 4] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "patch, reason",
    [
        ({"flag_bits": 0x1}, "encrypted archive member"),
        ({"method": 9}, "unsupported zip compression method 9"),  # Deflate64.
        ({"crc_xor": 0xFFFF}, "damaged archive member: bad CRC-32"),
    ],
)
def test_odd_members_are_unreadable_with_a_short_reason(tmp_path, patch, reason):
    path = tmp_path / "oregon-wildlife.zip"
    _write_zip(path, ["ow/elk/a.jpg", "ow/elk/odd.jpg", "ow/elk/z.jpg"])
    _patch_member(path, "ow/elk/odd.jpg", **patch)
    with archive.Source(str(path)) as source:
        assert source.files() == ["ow/elk/a.jpg", "ow/elk/odd.jpg", "ow/elk/z.jpg"]
        with pytest.raises(archive.UnreadableMemberError) as error:
            source.read("ow/elk/odd.jpg")
        assert str(error.value) == reason
        assert source.read("ow/elk/z.jpg") == b"bytes of ow/elk/z.jpg"  # The rest is fine.


def test_member_larger_than_the_limit_is_refused_from_the_directory(tmp_path):
    path = tmp_path / "oregon-wildlife.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ow/elk/huge.jpg", bytes(3 * 2**20))  # 3 MiB of zeros: a few KiB zipped.
    with archive.Source(str(path)) as source:
        source.files()
        with pytest.raises(archive.UnreadableMemberError, match="3 MiB is larger than the 1 MiB"):
            source.read("ow/elk/huge.jpg", max_bytes=2**20)
        assert len(source.read("ow/elk/huge.jpg", max_bytes=4 * 2**20)) == 3 * 2**20


def test_manual_dir_that_is_missing_or_a_file_is_a_source_error(tmp_path):
    with pytest.raises(archive.SourceError, match="does not exist"):
        archive.locate(str(tmp_path / "missing"))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(archive.SourceError, match="no Oregon Wildlife archive"):
        archive.locate(str(tmp_path / "a_file"))
