"""Check a PyInstaller build of CatBreed (`dist/CatBreed/`) the way a user would run it.

    python packaging/check_frozen.py [dist/CatBreed] [--photos DIR] [--max-mib 250]

Run it with the development venv's Python (it reads the results with Pillow; it needs
pillow-heif's HEIC encoder only to make its HEIC sample). It checks, in order:

* the folder's size is at most --max-mib MiB (what `du -sh` prints);
* the frozen `catbreed classify` names real cats' breeds (two photos per breed from --photos, the
  shared Oxford-IIIT cats by default) with its own bundled model, no --model, from outside the
  checkout, and decodes a HEIC photo;
* the frozen `catbreed-desktop --screenshot` opens the window on photos, classifies them and saves
  a 1200x800 PNG, on the offscreen platform and, where xvfb-run exists, on X11 (xcb) under Xvfb;
* `catbreed-desktop --install-desktop-entry` writes an entry that starts the frozen executable
  (checked with desktop-file-validate where it is installed).

User folders, settings and XDG folders all go to a temporary folder. Exit status 0 when every
check passed; the screenshots are kept in the folder it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "oxford-pet-cats"
PHOTOS_PER_BREED = 2


class CheckFailed(Exception):
    pass


def _folder_bytes(folder: Path) -> int:
    """Bytes on disk, as `du` counts them (links once, not their targets)."""
    total = 0
    for path in folder.rglob("*"):
        if not path.is_symlink():
            total += path.lstat().st_blocks * 512
    return total


def _biggest(folder: Path, count: int = 8) -> list[tuple[int, str]]:
    sizes = [
        (path.stat().st_size, str(path.relative_to(folder)))
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    ]
    return sorted(sizes, reverse=True)[:count]


def _run(
    command: list[str], environment: dict[str, str], cwd: Path, timeout: int = 300
) -> tuple[subprocess.CompletedProcess, float]:
    """The finished command and the seconds it took."""
    started = time.monotonic()
    completed = subprocess.run(
        command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return completed, time.monotonic() - started


def check_size(dist: Path, max_mib: float) -> None:
    mib = _folder_bytes(dist) / 2**20
    print(f"size: {mib:.1f} MiB ({_folder_bytes(dist) / 1e6:.1f} MB); biggest files:")
    for size, name in _biggest(dist):
        print(f"  {size / 2**20:6.1f} MiB  {name}")
    if mib > max_mib:
        raise CheckFailed(f"the folder is {mib:.1f} MiB, over the {max_mib} MiB limit")


def check_classify(dist: Path, photos_root: Path, environment: dict[str, str], work: Path) -> None:
    photos = {
        path: folder.name.replace("_", " ")
        for folder in sorted(photos_root.iterdir())
        if folder.is_dir()
        for path in sorted(folder.glob("*.jpg"))[:PHOTOS_PER_BREED]
    }
    if len(photos) < 2:
        raise CheckFailed(f"no breed folders of JPEG photos in {photos_root}")
    command = [str(dist / "catbreed"), "classify", "--json", "--engine", "cpu", *map(str, photos)]
    completed, seconds = _run(command, environment, work)
    if completed.returncode != 0:
        raise CheckFailed(f"catbreed classify failed ({completed.returncode}):\n{completed.stderr}")
    bundled = dist.resolve() / "_internal" / "catbreed_desktop" / "default_model"
    if f"from {bundled}" not in completed.stderr:
        raise CheckFailed(
            f"catbreed classify did not use the bundled model in {bundled}:\n{completed.stderr}"
        )
    records = [json.loads(line) for line in completed.stdout.splitlines()]
    right = sum(record["label"] == photos[Path(record["path"])] for record in records)
    if len(records) != len(photos) or right < 0.8 * len(photos):
        raise CheckFailed(f"{right} of {len(photos)} photos named right:\n{completed.stdout}")
    print(f"classify: {right} of {len(photos)} photos named right, in {seconds:.1f} s")


def check_heic(dist: Path, photos_root: Path, environment: dict[str, str], work: Path) -> None:
    try:
        import pillow_heif
    except ImportError:
        print("heic: skipped, pillow-heif is not installed in the Python running this check")
        return
    if not pillow_heif.libheif_info().get("HEIF"):  # the name of its HEVC encoder, empty without one
        print("heic: skipped, this pillow-heif cannot encode HEIC")
        return
    source = sorted((photos_root / "Sphynx").glob("*.jpg"))[0]
    heic = work / "sphynx.heic"
    with Image.open(source) as image:
        pillow_heif.from_pillow(image.convert("RGB")).save(heic, quality=90)
    completed, _ = _run(
        [str(dist / "catbreed"), "classify", "--json", "--engine", "cpu", str(heic)], environment, work
    )
    if completed.returncode != 0:
        raise CheckFailed(f"catbreed classify could not read a HEIC photo:\n{completed.stderr}")
    label = json.loads(completed.stdout)["label"]
    if label != "Sphynx":
        raise CheckFailed(f"the HEIC Sphynx was named {label}")
    print(f"heic: a HEIC photo decoded and named {label}")


def check_screenshot(
    dist: Path, photos_root: Path, environment: dict[str, str], work: Path, platform: str
) -> None:
    photos = [sorted((photos_root / breed).glob("*.jpg"))[0] for breed in ("Bengal", "Persian", "Siamese")]
    shot = work / f"screenshot-{platform}.png"
    command = [
        str(dist / "catbreed-desktop"),
        "--engine",
        "cpu",
        "--screenshot",
        str(shot),
        *map(str, photos),
    ]
    if platform == "xcb":
        xvfb_run = shutil.which("xvfb-run")
        if xvfb_run is None:
            print("screenshot (xcb): skipped, xvfb-run is not installed")
            return
        command = [xvfb_run, "-a", "-s", "-screen 0 1280x1024x24", *command]
    completed, seconds = _run(command, {**environment, "QT_QPA_PLATFORM": platform}, work, timeout=120)
    if completed.returncode != 0 or not shot.is_file():
        raise CheckFailed(
            f"catbreed-desktop --screenshot failed on {platform} ({completed.returncode}):\n{completed.stderr}"
        )
    with Image.open(shot) as image:
        if image.size != (1200, 800):
            raise CheckFailed(f"the {platform} screenshot is {image.size}, not the window's 1200x800")
        colours = len(image.convert("RGB").getcolors(1200 * 800))
    if colours < 5000:  # the empty window has about 1,000 colours; one photo brings over 15,000
        raise CheckFailed(f"the {platform} screenshot shows no photos ({colours} colours)")
    print(f"screenshot ({platform}): {shot} in {seconds:.1f} s")


def check_desktop_entry(dist: Path, environment: dict[str, str], work: Path) -> None:
    completed, _ = _run([str(dist / "catbreed-desktop"), "--install-desktop-entry"], environment, work)
    if completed.returncode != 0:
        raise CheckFailed(f"--install-desktop-entry failed:\n{completed.stderr}")
    entry = Path(environment["XDG_DATA_HOME"]) / "applications" / "org.catbreed.CatBreed.desktop"
    executable = (dist / "catbreed-desktop").resolve()
    if f"\nExec={executable} %F\n" not in entry.read_text(encoding="utf-8"):
        raise CheckFailed(f"the entry does not start {executable}:\n{entry.read_text(encoding='utf-8')}")
    validator = shutil.which("desktop-file-validate")
    if validator is not None:
        validated, _ = _run([validator, str(entry)], environment, work)
        if validated.returncode != 0 or validated.stdout:
            raise CheckFailed(f"desktop-file-validate: {validated.stdout}{validated.stderr}")
    print(f"desktop entry: {entry} starts {executable}" + (", valid" if validator else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", nargs="?", type=Path, default=ROOT / "dist" / "CatBreed")
    parser.add_argument(
        "--photos", type=Path, default=DEFAULT_PHOTOS, help="one folder of JPEG photos per breed"
    )
    parser.add_argument("--max-mib", type=float, default=250.0, help="largest acceptable folder size")
    args = parser.parse_args(argv)
    dist = args.dist.absolute()
    if not (dist / "catbreed-desktop").is_file():
        parser.error(f"{dist} holds no catbreed-desktop; build it first (packaging/README.md)")
    if not args.photos.is_dir():
        parser.error(f"no photos in {args.photos}; pass --photos DIR")
    work = Path(tempfile.mkdtemp(prefix="catbreed-frozen-check-"))
    hidden = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CATBREED_MODEL", "QT_QPA_PLATFORM"}
    environment = {key: value for key, value in os.environ.items() if key not in hidden}
    for name in ("DATA", "CACHE", "CONFIG"):
        environment[f"CATBREED_{name}_DIR"] = str(work / name.lower())
    environment["XDG_DATA_HOME"] = str(work / "xdg-data")
    started = time.monotonic()
    try:
        check_size(dist, args.max_mib)
        check_classify(dist, args.photos, environment, work)
        check_heic(dist, args.photos, environment, work)
        for platform in ("offscreen", "xcb"):
            check_screenshot(dist, args.photos, environment, work, platform)
        check_desktop_entry(dist, environment, work)
    except (CheckFailed, subprocess.TimeoutExpired) as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    print(f"all checks passed in {time.monotonic() - started:.1f} s; screenshots in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
