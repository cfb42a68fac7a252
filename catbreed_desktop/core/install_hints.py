"""Install commands that work for how this copy of CatBreed was installed.

No package index carries catbreed-desktop, so advice such as `pip install 'catbreed-desktop[gpu]'`
fails. An extra is added by reinstalling from where this copy came from: code running from a
checkout (an editable install included) names that checkout, `pip install -e '/src/catbreed[gpu]'`;
otherwise pip's record of the origin, `direct_url.json` (PEP 610), names the wheel file, folder or
repository it was installed from. Only a copy with no such record is named by its project name.

The command uses the pip of the environment that runs now: `pip` where that environment is the
active one, else its own `bin/pip` (as the README's `.venv/bin/pip`), so the extra lands where
CatBreed runs rather than in whatever `pip` comes first on PATH.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from catbreed_desktop.core import paths

DISTRIBUTION = "catbreed-desktop"

EDITABLE = "editable"  # a checkout, installed with -e or run from directly
FOLDER = "folder"  # `pip install /path/to/checkout`, not editable
ARCHIVE = "archive"  # a wheel or source archive, local or by URL
VCS = "vcs"  # `pip install git+https://...`
INDEX = "index"  # a package index, or an origin nothing recorded


@dataclass(frozen=True)
class InstallSource:
    """Where this copy of CatBreed was installed from: a `kind` above and its path or URL."""

    kind: str
    location: str = ""


def read_direct_url() -> str | None:
    """The text of the installed distribution's direct_url.json; None when not installed or not recorded."""
    from importlib import metadata

    try:
        return metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None


def running_checkout() -> Path | None:
    """The checkout the running code comes from (its pyproject.toml beside the package); None when installed."""
    try:
        text = (paths.CHECKOUT_DIR / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return paths.CHECKOUT_DIR if f'name = "{DISTRIBUTION}"' in text else None


def current_install_source() -> InstallSource:
    """Where the running copy of CatBreed came from."""
    return install_source(running_checkout(), read_direct_url())


def install_source(checkout: Path | None, direct_url: str | None) -> InstallSource:
    """Where a copy came from: the `checkout` it runs from, else what `direct_url` (the JSON text) records."""
    if checkout is not None:
        return InstallSource(EDITABLE, str(checkout))
    try:
        record = json.loads(direct_url or "null")
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("url"), str):
        return InstallSource(INDEX)
    url: str = record["url"]
    location = _local_path(url) or url
    if isinstance(record.get("dir_info"), dict):
        return InstallSource(EDITABLE if record["dir_info"].get("editable") else FOLDER, location)
    if isinstance(record.get("vcs_info"), dict):
        vcs = record["vcs_info"]
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        return InstallSource(VCS, f"{vcs.get('vcs', 'git')}+{url}" + (f"@{commit}" if commit else ""))
    return InstallSource(ARCHIVE, location)


def _local_path(url: str) -> str | None:
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else None


def pip_install_arguments(extras: str, source: InstallSource | None = None) -> str:
    """What follows `pip install` to add `extras` ("gpu", "cpu,serve") to this installation, shell-quoted."""
    source = source if source is not None else current_install_source()
    if source.kind == EDITABLE:
        return f"-e {shlex.quote(f'{source.location}[{extras}]')}"
    if source.kind == VCS or (source.kind == ARCHIVE and "://" in source.location):
        return shlex.quote(f"{DISTRIBUTION}[{extras}] @ {source.location}")
    if source.kind in (FOLDER, ARCHIVE):
        return shlex.quote(f"{source.location}[{extras}]")
    return shlex.quote(f"{DISTRIBUTION}[{extras}]")


def pip_command() -> str:
    """How to call the pip of the running environment from the current folder."""
    in_venv = sys.prefix != sys.base_prefix
    active = os.environ.get("VIRTUAL_ENV")
    if not in_venv or (active and _same_folder(Path(active), Path(sys.prefix))):
        return "pip"
    pip = Path(sys.prefix) / ("Scripts/pip.exe" if sys.platform == "win32" else "bin/pip")
    if not pip.exists():
        return "pip"
    try:
        relative = os.path.relpath(pip)
    except ValueError:  # another drive, on Windows
        relative = str(pip)
    return shlex.quote(relative if not relative.startswith("..") else str(pip))


def _same_folder(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False


def install_extra_command(extras: str, source: InstallSource | None = None) -> str:
    """The whole command that adds `extras` to this installation, e.g. `.venv/bin/pip install -e '/src[gpu]'`."""
    return f"{pip_command()} install {pip_install_arguments(extras, source)}"


def replace_package_command(package: str, extras: str, source: InstallSource | None = None) -> str:
    """The command that takes `package` out and adds `extras` that bring its replacement (onnxruntime-gpu)."""
    pip = pip_command()
    return f"{pip} uninstall -y {package} && {pip} install {pip_install_arguments(extras, source)}"


def new_environment_command(folder: str, extras: str, source: InstallSource | None = None) -> str:
    """The commands that make a virtual environment `folder` holding this app with `extras`."""
    pip = Path(folder) / ("Scripts/pip.exe" if sys.platform == "win32" else "bin/pip")
    return f"python3 -m venv {shlex.quote(folder)} && {shlex.quote(str(pip))} install {pip_install_arguments(extras, source)}"
