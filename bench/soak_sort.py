"""Soak test of safe sorting: hundreds of kill -9 at random moments of sort, resume and undo.

Each run puts a few dozen photos (bytes of the shared Oxford cats when present, else random
bytes) in an inbox on one file system and sorts them into a target on another: a tmpfs mounted
for the soak when root may mount one, else two plain folders with a simulated cross-device
rename. Child processes sort (core API), resume or undo (core API or the real `catbreed` command
line) with slowed file operations and are killed with SIGKILL at random moments; after every kill
the sha256 of every file is checked (no photo lost, at most the one in flight doubled, pre-existing
target files unchanged), then the run is finished with resume or undo and the final state is
checked exactly. It prints a summary table and exits with status 1 on any violation.

    .venv/bin/python bench/soak_sort.py [--runs 200] [--seed 1] [--photos 40] [--delay 0.003]

It is a benchmark, not a test: it takes minutes. Run it as root to get the tmpfs mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing it

from catbreed_desktop.core.sorting import JournalError, journal, safe_folder_name  # noqa: E402
from catbreed_desktop.core.sorting.fileops import TEMP_SUFFIX  # noqa: E402
from catbreed_desktop.core.sorting.journal import JOURNAL_GLOB, JournalState, read_journal  # noqa: E402

# A journal whose sort never began (no complete record), which readers skip, where this version has it.
EMPTY_JOURNAL: tuple[type[Exception], ...] = tuple(
    error for error in (getattr(journal, "EmptyJournal", None),) if error is not None
)

OXFORD = REPO.parent / "shared" / "data" / "oxford-pet-cats"
LABELS = ("Bengal", "Persian", "Maine Coon", "Sphynx")
PHASES = ("sort", "resume", "undo", "undo-again")
SLOWED_SHARE = 0.75  # the other killed children run at full speed
CLI_SHARE = 1 / 3  # resume and undo children that run the real command line
EARLY_KILL_SHARE = 0.1  # kills within 10 ms of "ready", aimed at the start of the journal
FINISHER_KILL_SHARE = 0.4
CHILD_TIMEOUT_S = 120
TMPFS_SIZE = "256m"

# The child (slows the file operations and journal writes, says "ready", then does its action) is
# shared with the kill test.
CHILD = REPO / "tests" / "sort_child.py"


class Violation(Exception):
    """A broken guarantee: a photo lost, doubled or changed, a stray file, an unfinished job."""

    def __init__(self, message: str, photo: str = "") -> None:
        super().__init__(message)
        self.photo = photo


@dataclass
class Layout:
    """Where inboxes and targets go, and how the two file systems are obtained."""

    work: Path
    inbox_root: Path
    target_root: Path
    mode: str  # "tmpfs" or "two folders"
    simulate_exdev: bool
    description: str
    mounted: bool = False


@dataclass
class Step:
    """One child process: what it did, how, and when it was killed."""

    action: str
    via: str
    slowed: bool
    kill_after_ms: float | None
    moment: str = ""  # in-flight, between, before, after (the child had finished), completed
    result: dict = field(default_factory=dict)
    seconds: float = 0.0
    stderr: str = ""

    def describe(self) -> str:
        how = f"{self.action} via {self.via}, {'slowed' if self.slowed else 'full speed'}"
        if self.kill_after_ms is None:
            return f"{how}: ran to the end in {self.seconds:.2f} s, result {self.result}"
        return f"{how}: SIGKILL {self.kill_after_ms:.1f} ms after ready, landed {self.moment}"


@dataclass
class Run:
    """One soak run: its folders, the photos it started with, and the steps so far."""

    index: int
    phase: str
    folder: Path
    inbox: Path
    target: Path
    data: Path
    items: list[tuple[str, str]]
    original_inbox: dict[str, str]  # relative path -> sha256
    preexisting: dict[str, str]  # relative path in the target -> sha256
    folder_of: dict[str, str]  # sha256 of a photo -> the folder it belongs in
    steps: list[Step] = field(default_factory=list)

    @property
    def originals(self) -> Counter[str]:
        return Counter(self.original_inbox.values()) + Counter(self.preexisting.values())

    def describe_photo(self, digest: str) -> str:
        names = [f"inbox/{rel}" for rel, sha in self.original_inbox.items() if sha == digest]
        names += [f"target/{rel} (pre-existing)" for rel, sha in self.preexisting.items() if sha == digest]
        return f"{', '.join(names) or 'no original'} (sha256 {digest[:16]})"


@dataclass
class Stats:
    phases: Counter[str] = field(default_factory=Counter)
    finishers: Counter[str] = field(default_factory=Counter)
    kills: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, moment)
    children: Counter[str] = field(default_factory=Counter)  # via
    kill_checks: int = 0
    final_checks: int = 0
    photos_verified: int = 0
    doubled_in_flight: int = 0
    max_temps_after_kill: int = 0
    leftover_folders: int = 0
    partial_journals: int = 0
    violations: list[str] = field(default_factory=list)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of every file under root, hidden and temporary files included."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): sha256(path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def journal_paths(data: Path) -> list[Path]:
    return sorted((data / "journals").glob(JOURNAL_GLOB))


def journal_records(data: Path) -> list[str]:
    """The record types of every journal of a run, in order (a record cut short counts as '?')."""
    types = []
    for path in journal_paths(data):
        for line in path.read_bytes().splitlines():
            try:
                types.append(json.loads(line).get("type", "?"))
            except ValueError:
                types.append("?")
    return types


def latest_state(data: Path) -> JournalState | None:
    """The newest journal of a run that holds a sort, read by the product's reader; None when none."""
    for path in reversed(journal_paths(data)):
        try:
            return read_journal(path)
        except EMPTY_JOURNAL:
            continue
    return None


def journal_tail(data: Path, lines: int = 6) -> str:
    paths = journal_paths(data)
    if not paths:
        return "(no journal)"
    text = paths[-1].read_bytes().decode("utf-8", "replace").splitlines()
    tail = [line if len(line) < 400 else line[:400] + " ..." for line in text[-lines:]]
    return f"{paths[-1].name}, {len(text)} lines, last {len(tail)}:\n      " + "\n      ".join(tail)


def filesystem_of(path: Path) -> str:
    """The type and mount point of the file system holding `path`, from /proc/self/mounts."""
    best = ("?", "")
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return "?"
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[1]):
            best = (parts[2], point)
    return f"{best[0]} at {best[1]}"


def prepare_layout(workdir: Path, no_mount: bool) -> Layout:
    """Mount a tmpfs for the targets where permitted; else two plain folders and a simulated EXDEV."""
    work = Path(tempfile.mkdtemp(prefix="catbreed-soak-", dir=workdir))
    inbox_root = work / "inbox-side"
    inbox_root.mkdir()
    mount_point = work / "tmpfs"
    mount_point.mkdir()
    why = "--no-mount"
    if not no_mount:
        command = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            why = done.stderr.strip() or f"mount exited with {done.returncode}"
            mounted = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired) as error:
            mounted, why = False, str(error)
        if mounted and mount_point.stat().st_dev != inbox_root.stat().st_dev:
            return Layout(
                work,
                inbox_root,
                mount_point,
                "tmpfs",
                simulate_exdev=False,
                description=(
                    f"inbox on {filesystem_of(inbox_root)}, target on a {TMPFS_SIZE} tmpfs mounted "
                    f"at {mount_point}: moves are real cross-device copy + verify + delete"
                ),
                mounted=True,
            )
        if mounted:
            subprocess.run(["umount", str(mount_point)], check=False)
            why = "the mount did not give another file system"
    target_root = work / "target-side"
    target_root.mkdir()
    return Layout(
        work,
        inbox_root,
        target_root,
        "two folders",
        simulate_exdev=True,
        description=(
            f"no tmpfs ({why}): inbox and target are two folders on {filesystem_of(inbox_root)}; the "
            "children make renames between folders fail with EXDEV, so moves copy + verify + delete"
        ),
    )


def release_layout(layout: Layout, keep: bool) -> None:
    if layout.mounted:
        subprocess.run(["umount", str(layout.target_root)], check=False)
    if not keep:
        shutil.rmtree(layout.work, ignore_errors=True)


def load_photos(count: int, rng: random.Random) -> tuple[list[bytes], str]:
    """`count` distinct photo contents: real JPEG bytes from the shared Oxford cats, else random bytes."""
    files = sorted(OXFORD.rglob("*.jpg")) if OXFORD.is_dir() else []
    if len(files) >= count:
        blobs: dict[str, bytes] = {}
        for path in rng.sample(files, min(len(files), count * 2)):
            blobs.setdefault(sha256(data := path.read_bytes()), data)
            if len(blobs) == count:
                sizes = sorted(len(blob) for blob in blobs.values())
                return list(blobs.values()), (
                    f"{count} JPEGs read from {OXFORD} ({sizes[0] // 1000}-{sizes[-1] // 1000} kB)"
                )
    blobs = {}
    while len(blobs) < count:
        data = rng.randbytes(rng.randint(2_000, 150_000))
        blobs[sha256(data)] = data
    return list(blobs.values()), f"{count} random byte strings (2-150 kB; {OXFORD} not found)"


class Soak:
    def __init__(self, args: argparse.Namespace, layout: Layout, photos: list[bytes]) -> None:
        self.args = args
        self.layout = layout
        self.photos = photos
        self.rng = random.Random(args.seed)
        self.stats = Stats()
        self.estimate_s: dict[tuple[str, bool], float] = {}
        self.kept: list[Path] = []

    # --- one run's folders and photos -------------------------------------------------------

    def new_run(self, index: int, phase: str, name: str = "") -> Run:
        name = name or f"run{index:04d}"
        folder = self.layout.inbox_root / name
        inbox, target, data = folder / "inbox", self.layout.target_root / name, folder / "data"
        order = list(self.photos)
        self.rng.shuffle(order)
        items: list[tuple[str, str]] = []
        labels: dict[str, str] = {}
        for number, blob in enumerate(order):
            # Repeated names in sub-folders force "name (2).jpg".
            path = inbox / f"roll{number % 3}" / f"IMG_{number % 7:04d}.jpg"
            while path.exists():
                path = path.with_name(f"x{path.name}")
            write(path, blob)
            items.append((str(path), LABELS[number % len(LABELS)]))
            labels[sha256(blob)] = safe_folder_name(LABELS[number % len(LABELS)])
        # A second inbox photo with the bytes of photo 2 and its label: a duplicate inside the plan.
        twin = inbox / "roll9" / "IMG_0002.jpg"
        write(twin, order[2])
        items.append((str(twin), LABELS[2]))
        # A different file already at photo 0's destination name, and photo 1's bytes already sorted.
        write(
            target / LABELS[0] / "IMG_0000.jpg", b"a different photo sorted earlier " + self.rng.randbytes(64)
        )
        write(target / LABELS[1] / "sorted last year.jpg", order[1])
        data.mkdir(parents=True)
        return Run(
            index, phase, folder, inbox, target, data, items, snapshot(inbox), snapshot(target), labels
        )

    # --- children -----------------------------------------------------------------------------

    def child(self, run: Run, action: str, kill: bool, slowed: bool | None = None, via: str = "") -> Step:
        """Run one child; with `kill`, SIGKILL it at a random moment after it says "ready"."""
        if slowed is None:
            slowed = kill and self.rng.random() < SLOWED_SHARE
        if not via:
            via = "cli" if action != "sort" and self.rng.random() < CLI_SHARE else "api"
        kill_after = self.kill_delay(run, action, slowed) if kill else None
        step = Step(action, via, slowed, None if kill_after is None else kill_after * 1000)
        run.steps.append(step)
        self.stats.children[via] += 1
        number = len(run.steps)
        config = run.folder / f"child{number}.json"
        settings = {
            "action": action,
            "via": via,
            "delay": self.args.delay if slowed else 0.0,
            "simulate_exdev": self.layout.simulate_exdev,
            "items": run.items,
            "target": str(run.target),
        }
        config.write_text(json.dumps(settings))
        env = os.environ | {"PYTHONPATH": str(REPO), "CATBREED_DATA_DIR": str(run.data)}
        before = journal_records(run.data)
        errors_path = run.folder / f"child{number}.stderr"
        with open(errors_path, "w") as errors:
            process = subprocess.Popen(
                [sys.executable, str(CHILD), str(config)],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
                cwd=REPO,
                text=True,
            )
            stdout = process.stdout
            assert stdout is not None  # stdout=PIPE
            try:
                ready = stdout.readline().strip()
                started = time.monotonic()
                alive = True
                if ready == "ready" and kill_after is not None:
                    time.sleep(kill_after)
                    alive = process.poll() is None
                    if alive:
                        os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=CHILD_TIMEOUT_S)
                step.seconds = time.monotonic() - started
                # read(), not communicate(): readline() may already hold the rest in its buffer.
                output = stdout.read()
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                stdout.close()
        step.stderr = errors_path.read_text(errors="replace")
        for line in output.splitlines():
            if line.startswith("result "):
                step.result = json.loads(line[len("result ") :])
        if ready != "ready":
            raise Violation(f"the {action} child failed before it was ready: {step.stderr[-1500:]}")
        if kill_after is None or not alive:
            step.moment = "completed" if kill_after is None else "after"
            self.normalise_result(step, action)
        else:
            after = journal_records(run.data)
            if len(after) == len(before):
                step.moment = "before"
            elif after[-1] in ("intent", "undo-intent"):
                step.moment = "in-flight"
            else:
                step.moment = "between"
        if kill_after is not None:
            self.stats.kills[(action, step.moment)] += 1
        return step

    def normalise_result(self, step: Step, action: str) -> None:
        """Turn a finished child's report (API or CLI exit status and messages) into one form."""
        result = step.result
        if "exit" in result:
            code, lines = result["exit"], step.stderr.splitlines()
            nothing_message = "no interrupted sort" if action == "resume" else "no sort to undo"
            result = {
                "exit": code,
                "nothing": code == 1 and any(nothing_message in line for line in lines),
                "problems": [line for line in lines if "not undone:" in line or "failed, left" in line],
            }
            if code not in (0, 1) or (code == 1 and not result["nothing"] and not result["problems"]):
                result["error"] = f"exit status {code}: {step.stderr.strip()[-800:]}"
        elif not result:
            result = {"error": f"no result; stderr: {step.stderr.strip()[-1500:]}"}
        step.result = result
        if result.get("error"):
            raise Violation(f"the {action} child ended with an error: {result['error']}")
        if result.get("problems"):
            raise Violation(f"the {action} child reported problems: {result['problems']}")

    def kill_delay(self, run: Run, action: str, slowed: bool) -> float:
        """Seconds to wait after "ready": mostly spread over the expected run time, sometimes very early."""
        if self.rng.random() < EARLY_KILL_SHARE:
            return self.rng.uniform(0.0, 0.010)
        share = 1.0
        if action != "sort":
            try:
                state = latest_state(run.data)
            except JournalError:
                state = None
            if state is not None and state.operations:
                if action == "resume":
                    left = len(state.pending)
                else:
                    left = sum(1 for op in state.operations if op.outcome == "done" and not op.undone)
                    left += len(state.pending)
                share = max(0.1, left / len(state.operations))
        expected = self.estimate_s[("sort" if action == "resume" else action, slowed)]
        return self.rng.uniform(0.0, expected * share * 1.1)

    # --- checks -------------------------------------------------------------------------------

    def current(self, run: Run) -> tuple[dict[str, str], dict[str, str], list[str]]:
        inbox, target = snapshot(run.inbox), snapshot(run.target)
        temps = [f"inbox/{rel}" for rel in inbox if rel.endswith(TEMP_SUFFIX)]
        temps += [f"target/{rel}" for rel in target if rel.endswith(TEMP_SUFFIX)]
        inbox = {rel: sha for rel, sha in inbox.items() if not rel.endswith(TEMP_SUFFIX)}
        target = {rel: sha for rel, sha in target.items() if not rel.endswith(TEMP_SUFFIX)}
        return inbox, target, temps

    def check_common(self, run: Run, inbox: dict[str, str], target: dict[str, str], exact: bool) -> None:
        """Nothing lost, nothing unknown, pre-existing target files unchanged; doubles only when not `exact`."""
        originals = run.originals
        present = Counter(inbox.values()) + Counter(target.values())
        for digest, count in originals.items():
            if present[digest] < count:
                raise Violation(
                    f"a photo was lost: {present[digest]} of {count} left", run.describe_photo(digest)
                )
        unknown = [f"inbox/{rel}" for rel, sha in inbox.items() if sha not in originals]
        unknown += [f"target/{rel}" for rel, sha in target.items() if sha not in originals]
        if unknown:
            raise Violation(f"files whose bytes belong to no photo: {unknown}")
        doubled = [digest for digest in present if present[digest] > originals[digest]]
        if exact and doubled:
            raise Violation("a photo exists twice", run.describe_photo(doubled[0]))
        if len(doubled) > 1 or any(present[digest] > originals[digest] + 1 for digest in doubled):
            where = "; ".join(run.describe_photo(digest) for digest in doubled)
            raise Violation(f"more than the one photo in flight exists twice: {where}")
        self.stats.doubled_in_flight += len(doubled)
        for rel, digest in run.preexisting.items():
            if target.get(rel) != digest:
                raise Violation(f"the pre-existing target file {rel} was changed or removed")
        self.stats.photos_verified += len(run.original_inbox)

    def check_after_kill(self, run: Run) -> None:
        inbox, target, temps = self.current(run)
        self.check_common(run, inbox, target, exact=False)
        if len(temps) > 2:
            raise Violation(f"more temporary files than operations that can be in flight: {temps}")
        self.stats.max_temps_after_kill = max(self.stats.max_temps_after_kill, len(temps))
        self.stats.kill_checks += 1

    def check_original(self, run: Run, after: str) -> None:
        """After a completed undo (or nothing to do): the starting tree, names and bytes, exactly."""
        inbox, target, temps = self.current(run)
        if temps:
            raise Violation(f"temporary files left after {after}: {temps}")
        self.check_common(run, inbox, target, exact=True)
        if inbox != run.original_inbox:
            moved = sorted(set(inbox.items()) ^ set(run.original_inbox.items()))
            raise Violation(f"after {after} the inbox differs from the original: {moved[:6]}")
        if target != run.preexisting:
            extra = sorted(set(target) - set(run.preexisting))
            raise Violation(f"after {after} the target holds more than its pre-existing files: {extra[:6]}")
        folders = [p for p in run.target.rglob("*") if p.is_dir() and not any(p.iterdir())]
        self.stats.leftover_folders += len(folders)
        self.stats.final_checks += 1

    def check_sorted(self, run: Run) -> None:
        """After a completed resume: every photo in its breed folder of the target exactly once."""
        inbox, target, temps = self.current(run)
        if temps:
            raise Violation(f"temporary files left after resume: {temps}")
        self.check_common(run, inbox, target, exact=True)
        in_target = Counter(target.values())
        for digest, folder in run.folder_of.items():
            if in_target[digest] != 1:
                raise Violation(
                    f"in the target {in_target[digest]} times, not once", run.describe_photo(digest)
                )
            place = next(rel for rel, sha in target.items() if sha == digest)
            if Path(place).parts[0] != folder:
                raise Violation(f"sorted into {place}, not into {folder}/", run.describe_photo(digest))
        left = [rel for rel, sha in inbox.items() if in_target[sha] == 0]
        if left:
            raise Violation(f"resume left photos behind in the inbox: {left[:6]}")
        self.stats.final_checks += 1

    # --- a run --------------------------------------------------------------------------------

    def killed(self, run: Run, action: str) -> Step:
        step = self.child(run, action, kill=True)
        self.check_after_kill(run)
        return step

    def soak_run(self, index: int) -> None:
        phase = self.rng.choice(PHASES)
        self.stats.phases[phase] += 1
        run = self.new_run(index, phase)
        try:
            if phase == "sort":
                self.killed(run, "sort")
            elif phase == "resume":
                self.killed(run, "sort")
                self.killed(run, "resume")
            else:
                if self.rng.random() < 0.5:
                    self.child(run, "sort", kill=False)
                else:
                    self.killed(run, "sort")
                self.killed(run, "undo")
                if phase == "undo-again":
                    self.killed(run, "undo")
            self.finish(run, self.rng.choice(("resume", "undo")))
        except Violation as violation:
            self.record_violation(run, violation)
            return
        except Exception:  # a fault of the soak itself: report it with the run, never hide it
            self.record_violation(run, Violation(f"error in the soak script: {traceback.format_exc()}"))
            return
        self.stats.partial_journals += len(list((run.data / "journals").glob(".*.new")))
        shutil.rmtree(run.folder, ignore_errors=True)
        shutil.rmtree(run.target, ignore_errors=True)

    def finish(self, run: Run, finisher: str) -> None:
        """Finish with resume or undo (maybe killed once first), check, and end every run undone."""
        self.stats.finishers[finisher] += 1
        if self.rng.random() < FINISHER_KILL_SHARE:
            self.killed(run, finisher)
        if finisher == "undo":
            self.child(run, "undo", kill=False)
            self.check_original(run, "a completed undo")
            return
        before = self.current(run)
        step = self.child(run, "resume", kill=False)
        try:
            state = latest_state(run.data)
        except JournalError as error:
            raise Violation(f"the journal cannot be read after resume: {error}") from error
        if state is None:
            if not step.result.get("nothing"):
                raise Violation("resume did something without a journal")
            self.check_original(run, "a resume with no journal (killed before its journal began)")
            return
        if state.undo_started:
            if not step.result.get("nothing") or self.current(run) != before:
                raise Violation("resume touched a sort whose undo had begun")
            self.stats.finishers["resume refused, undo begun"] += 1
        else:
            if state.pending:
                raise Violation(f"resume finished with {len(state.pending)} operations still pending")
            self.check_sorted(run)
        self.child(run, "undo", kill=False)
        self.check_original(run, "an undo of the resumed sort")

    def record_violation(self, run: Run, violation: Violation) -> None:
        lines = [
            f"run {run.index} (seed {self.args.seed}), phase {run.phase}: {violation}",
            f"    photo: {violation.photo or '-'}",
            "    steps:",
            *[f"      {number}. {step.describe()}" for number, step in enumerate(run.steps, start=1)],
            f"    journal: {journal_tail(run.data)}",
        ]
        if self.layout.mounted and run.target.exists():
            shutil.copytree(run.target, run.folder / "target-copy", dirs_exist_ok=True)
        lines.append(
            f"    kept: {run.folder}" + (" (target copied to target-copy/)" if self.layout.mounted else "")
        )
        self.kept.append(run.folder)
        self.stats.violations.append("\n".join(lines))
        print("VIOLATION " + "\n".join(lines), flush=True)

    # --- calibration --------------------------------------------------------------------------

    def calibrate(self) -> str:
        """Time a full sort and undo, slowed and at full speed, without kills; they must restore the inbox."""
        notes = []
        for slowed in (True, False):
            run = self.new_run(-1, "calibration", f"calibration-{'slowed' if slowed else 'full-speed'}")
            sort = self.child(run, "sort", kill=False, slowed=slowed, via="api")
            self.check_sorted(run)
            undo = self.child(run, "undo", kill=False, slowed=slowed, via="api")
            self.check_original(run, "the calibration undo")
            self.estimate_s[("sort", slowed)] = sort.seconds
            self.estimate_s[("undo", slowed)] = undo.seconds
            notes.append(
                f"{'slowed' if slowed else 'full speed'}: sort {sort.seconds:.2f} s, undo {undo.seconds:.2f} s"
            )
            shutil.rmtree(run.folder, ignore_errors=True)
            shutil.rmtree(run.target, ignore_errors=True)
        return "; ".join(notes)

    # --- summary ------------------------------------------------------------------------------

    def summary(self, seconds: float, photo_note: str, calibration: str) -> str:
        s = self.stats
        moments = ("in-flight", "between", "before", "after")
        rows = [f"{'killed child':<14}{'kills':>7}{'mid-op':>8}{'between':>9}{'before':>8}{'after':>7}"]
        for action in ("sort", "resume", "undo"):
            counts = [s.kills[(action, moment)] for moment in moments]
            rows.append(
                f"{action:<14}{sum(counts):>7}"
                + "".join(f"{c:>{w}}" for c, w in zip(counts, (8, 9, 8, 7), strict=True))
            )
        totals = [sum(s.kills[(a, m)] for a in ("sort", "resume", "undo")) for m in moments]
        rows.append(
            f"{'all':<14}{sum(totals):>7}"
            + "".join(f"{c:>{w}}" for c, w in zip(totals, (8, 9, 8, 7), strict=True))
        )
        all_kills = sum(totals)
        mid = totals[0] + totals[1]
        return "\n".join(
            [
                "",
                "soak_sort summary",
                f"  mode:              {self.layout.mode}: {self.layout.description}",
                f"  photos:            {photo_note}, +1 twin in the inbox, +2 files already in the target",
                f"  calibration:       {calibration} (no kills)",
                f"  runs:              {sum(s.phases.values())} ({', '.join(f'{p} {s.phases[p]}' for p in PHASES)})",
                f"  finished with:     {', '.join(f'{k} {v}' for k, v in s.finishers.items())}",
                f"  child processes:   {sum(s.children.values())} ({s.children['api']} core API, "
                f"{s.children['cli']} `catbreed` CLI)",
                f"  kills (SIGKILL):   {all_kills}, landed mid-sort/undo {mid} ({100 * mid / max(all_kills, 1):.0f}%: "
                f"{totals[0]} with a file operation in flight, {totals[1]} between operations), "
                f"{totals[2]} before the first journal record, {totals[3]} after the child finished",
                *["    " + row for row in rows],
                f"  checks:            {s.kill_checks} after a kill, {s.final_checks} of a finished state; "
                f"{s.photos_verified} photo verifications by sha256",
                f"  seen after kills:  {s.doubled_in_flight} photos doubled while in flight (allowed: one at a "
                f"time), at most {s.max_temps_after_kill} temporary files",
                f"  left behind:       {s.leftover_folders} empty folders in targets after undo, "
                f"{s.partial_journals} unfinished journal files (.sort-*.jsonl.new) in data folders",
                f"  violations:        {len(s.violations)}",
                f"  total time:        {seconds:.0f} s",
            ]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="soak runs (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the whole soak (default 1)")
    parser.add_argument("--photos", type=int, default=40, help="distinct photos per run (default 40)")
    parser.add_argument(
        "--delay", type=float, default=0.003, help="seconds a slowed child sleeps around each file operation"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where to work")
    parser.add_argument("--no-mount", action="store_true", help="use two plain folders even as root")
    args = parser.parse_args(argv)
    if args.photos < 3:
        parser.error("--photos must be at least 3")

    started = time.monotonic()
    photos, photo_note = load_photos(args.photos, random.Random(args.seed))
    layout = prepare_layout(args.workdir, args.no_mount)
    print(f"mode: {layout.mode}: {layout.description}", flush=True)
    soak = Soak(args, layout, photos)
    try:
        try:
            calibration = soak.calibrate()
        except Violation as violation:
            print(f"the calibration (a sort and an undo without kills) failed: {violation} {violation.photo}")
            return 1
        print(f"calibration: {calibration}", flush=True)
        for index in range(args.runs):
            soak.soak_run(index)
            if (index + 1) % 10 == 0:
                kills = sum(soak.stats.kills.values())
                print(
                    f"run {index + 1}/{args.runs}: {kills} kills, {len(soak.stats.violations)} violations, "
                    f"{time.monotonic() - started:.0f} s",
                    flush=True,
                )
    finally:
        release_layout(layout, keep=bool(soak.kept))
    print(soak.summary(time.monotonic() - started, photo_note, calibration))
    for described in soak.stats.violations:
        print("\n" + described)
    return 1 if soak.stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())
