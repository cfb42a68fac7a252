"""What a destination folder already holds: names taken and file contents, for collisions and duplicates."""

from __future__ import annotations

from pathlib import Path

from catbreed_desktop.core.sorting.fileops import TEMP_SUFFIX, Fingerprint, fingerprint
from catbreed_desktop.core.sorting.folder_names import name_key


class FolderContents:
    """The files of one folder (plus files planned into it), hashed lazily and only when sizes match."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._taken: set[str] = set()
        # size -> (file holding the bytes, name it has or will have here)
        self._by_size: dict[int, list[tuple[Path, Path]]] = {}
        self._hashes: dict[Path, Fingerprint] = {}
        try:
            entries = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        for entry in entries:
            self._taken.add(name_key(entry.name))
            if entry.name.endswith(TEMP_SUFFIX) or entry.is_symlink() or not entry.is_file():
                continue
            try:
                size = entry.stat().st_size
            except OSError:
                continue
            self._by_size.setdefault(size, []).append((entry, entry))

    def is_taken(self, name: str) -> bool:
        return name_key(name) in self._taken

    def has_size(self, size: int) -> bool:
        """Whether any file here has this size (only then is hashing worth it)."""
        return size in self._by_size

    def add(self, destination: Path, holder: Path | None = None, content: Fingerprint | None = None) -> None:
        """Record a file that is (or will be) at `destination`; `holder` has its bytes until then."""
        holder = holder or destination
        self._taken.add(name_key(destination.name))
        try:
            size = content.size if content else holder.stat().st_size
        except OSError:
            return
        self._by_size.setdefault(size, []).append((holder, destination))
        if content:
            self._hashes[holder] = content

    def find_identical(self, content: Fingerprint, ignore: Path | None = None) -> Path | None:
        """A file here with exactly these bytes, if any (`ignore` is the source itself)."""
        for holder, shown in self._by_size.get(content.size, []):
            if ignore is not None and holder == ignore:
                continue
            known = self._hashes.get(holder)
            if known is None:
                try:
                    known = self._hashes[holder] = fingerprint(holder)
                except OSError:
                    continue
            if known == content:
                return shown
        return None
