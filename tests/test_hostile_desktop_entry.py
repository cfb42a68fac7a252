"""Hostile data homes for `--install-desktop-entry` and its undoing: links at the entry's names and
folders, someone else's files there, a relative $XDG_DATA_HOME. Nothing outside the data home, and
nothing that is not CatBreed's, is ever written, replaced or removed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from catbreed_desktop.core import desktop_entry
from catbreed_desktop.gui.app import main as app_main

pytestmark = pytest.mark.timeout(60)
ICON_256 = Path("icons", "hicolor", "256x256", "apps", "org.catbreed.CatBreed.png")
ENTRY = Path("applications", "org.catbreed.CatBreed.desktop")
USER_BYTES = b"someone's own file, not an icon\n"


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "data home"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the data home holding a file of the user's."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "precious.txt").write_bytes(USER_BYTES)
    return folder


def _run(argument: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = app_main([argument])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _files_below(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*") if path.is_file() or path.is_symlink()}


def test_an_icon_name_linked_to_a_users_file_is_refused_and_the_file_kept(xdg, outside, capsys) -> None:
    (xdg / ICON_256).parent.mkdir(parents=True)
    (xdg / ICON_256).symlink_to(outside / "precious.txt")

    status, out, err = _run("--install-desktop-entry", capsys)

    assert status == 1 and out == "" and len(err.splitlines()) == 1
    assert "is a symbolic link" in err and str(xdg / ICON_256) in err
    assert (outside / "precious.txt").read_bytes() == USER_BYTES
    assert (xdg / ICON_256).is_symlink()
    assert not (xdg / ENTRY).exists()  # checked before anything was written


def test_a_dangling_link_at_the_entry_name_creates_nothing_outside(xdg, outside, capsys) -> None:
    (xdg / ENTRY).parent.mkdir(parents=True)
    (xdg / ENTRY).symlink_to(outside / "made by the link.desktop")

    status, _, err = _run("--install-desktop-entry", capsys)

    assert status == 1 and "is a symbolic link" in err
    assert _files_below(outside) == {Path("precious.txt")}


def test_a_linked_folder_that_leaves_the_data_home_is_not_written_through(xdg, outside, capsys) -> None:
    xdg.mkdir()
    (xdg / "icons").symlink_to(outside, target_is_directory=True)

    status, _, err = _run("--install-desktop-entry", capsys)

    assert status == 1 and len(err.splitlines()) == 1
    assert "does not lead to a folder inside" in err
    assert _files_below(outside) == {Path("precious.txt")}
    assert not (xdg / ENTRY).exists()


def test_a_linked_folder_inside_the_data_home_is_used(xdg, capsys) -> None:
    (xdg / "shared icons").mkdir(parents=True)
    (xdg / "icons").symlink_to(xdg / "shared icons", target_is_directory=True)

    status, out, _ = _run("--install-desktop-entry", capsys)

    assert status == 0 and len(out.splitlines()) == 4
    assert (xdg / "shared icons" / ICON_256.relative_to("icons")).is_file()


def test_someone_elses_file_at_the_entry_name_is_neither_replaced_nor_removed(xdg, capsys) -> None:
    (xdg / ENTRY).parent.mkdir(parents=True)
    (xdg / ENTRY).write_bytes(USER_BYTES)

    status, _, err = _run("--install-desktop-entry", capsys)
    assert status == 1 and "was not written by CatBreed" in err
    assert (xdg / ENTRY).read_bytes() == USER_BYTES

    status, out, err = _run("--uninstall-desktop-entry", capsys)
    assert status == 1 and out == ""
    assert err.strip() == f"catbreed-desktop: left {xdg / ENTRY}: was not written by CatBreed"
    assert (xdg / ENTRY).read_bytes() == USER_BYTES


def test_uninstall_removes_only_its_own_files_and_never_follows_links(xdg, outside, capsys) -> None:
    assert _run("--install-desktop-entry", capsys)[0] == 0
    # The 256 px icon replaced by a link to the user's file, the 48 px one by their own PNG.
    (xdg / ICON_256).unlink()
    (xdg / ICON_256).symlink_to(outside / "precious.txt")
    icon_48 = xdg / "icons" / "hicolor" / "48x48" / "apps" / "org.catbreed.CatBreed.png"
    Image.new("RGBA", (48, 48), (1, 2, 3, 255)).save(icon_48)
    theirs_48 = icon_48.read_bytes()

    status, out, err = _run("--uninstall-desktop-entry", capsys)

    assert status == 1
    assert out.splitlines() == [
        f"removed {xdg / ENTRY}",
        f"removed {xdg / 'icons' / 'hicolor' / '128x128' / 'apps' / 'org.catbreed.CatBreed.png'}",
    ]
    assert sorted(err.splitlines()) == sorted(
        [
            f"catbreed-desktop: left {icon_48}: was not written by CatBreed",
            f"catbreed-desktop: left {xdg / ICON_256}: is a symbolic link",
        ]
    )
    assert (xdg / ICON_256).is_symlink() and (outside / "precious.txt").read_bytes() == USER_BYTES
    assert icon_48.read_bytes() == theirs_48


def test_uninstall_does_not_reach_through_a_folder_link_out_of_the_data_home(xdg, outside, capsys) -> None:
    # Files of ours in a folder outside, reached by a link: not the data home's, so not removed.
    desktop_entry.install_desktop_entry(base=outside / "elsewhere")
    xdg.mkdir()
    (xdg / "applications").symlink_to(outside / "elsewhere" / "applications", target_is_directory=True)

    status, _, err = _run("--uninstall-desktop-entry", capsys)

    assert status == 1 and "does not lead to a folder inside" in err
    assert (outside / "elsewhere" / ENTRY).is_file()


def test_installing_again_replaces_its_own_files_even_from_before_they_were_marked(xdg, capsys) -> None:
    assert _run("--install-desktop-entry", capsys)[0] == 0
    # As an older CatBreed wrote them: the entry without its mark line, the icon without its text chunk.
    entry_text = (xdg / ENTRY).read_text(encoding="utf-8")
    (xdg / ENTRY).write_text(entry_text.replace("X-CatBreed-Installed-By=catbreed-desktop\n", ""))
    with Image.open(xdg / ICON_256) as icon:
        icon.load()
        unmarked = icon.copy()
    unmarked.save(xdg / ICON_256)  # no text chunk
    # A hard link elsewhere to our icon keeps its bytes: the file is replaced, not written in place.
    other_name = xdg / "kept copy.png"
    os.link(xdg / ICON_256, other_name)
    before = other_name.read_bytes()

    status, out, _ = _run("--install-desktop-entry", capsys)

    assert status == 0 and len(out.splitlines()) == 4
    assert "X-CatBreed-Installed-By=catbreed-desktop" in (xdg / ENTRY).read_text(encoding="utf-8")
    assert other_name.read_bytes() == before
    assert not [path for path in xdg.rglob(".*.tmp")]
    assert _run("--uninstall-desktop-entry", capsys)[0] == 0
    assert not (xdg / ENTRY).exists() and not (xdg / ICON_256).exists()


@pytest.mark.parametrize("relative", ["relative/data", "."])
def test_a_relative_xdg_data_home_is_treated_as_unset(relative, tmp_path, monkeypatch, capsys) -> None:
    home, work = tmp_path / "home", tmp_path / "cwd"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", relative)
    monkeypatch.chdir(work)

    assert _run("--install-desktop-entry", capsys)[0] == 0

    assert (home / ".local" / "share" / ENTRY).is_file()
    assert not any(work.iterdir())
