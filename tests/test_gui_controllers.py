"""The window's controllers on their own: a fake classifier, a task runner without threads, no model, no window.

These show the controllers' logic (queueing, cancel, bursts, undo state, failures) is testable
without loading a model or starting a thread; the real runner is tested last, with real threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import COLOURS, make_photo
from gui_fakes import FakeClassifier, InlineRunner

from catbreed_desktop.core.bundle import BundleError
from catbreed_desktop.core.settings import Settings
from catbreed_desktop.core.sorting import list_journals
from catbreed_desktop.gui.classify_controller import ClassifyController
from catbreed_desktop.gui.error_log import log_path
from catbreed_desktop.gui.photo_model import CLASSIFYING_TEXT, NOT_CLASSIFIED_TEXT, PhotoListModel
from catbreed_desktop.gui.sort_controller import SortController
from catbreed_desktop.gui.tasks import Task, TaskRunner
from catbreed_desktop.gui.watch_controller import WatchController

pytestmark = pytest.mark.timeout(60)


def names(count: int, folder: Path = Path("/photos")) -> list[Path]:
    return [folder / f"{('Red', 'Green', 'Blue')[i % 3]}-{i}.png" for i in range(count)]


def loaded(classifier: FakeClassifier, runner: InlineRunner, photos: PhotoListModel) -> ClassifyController:
    controller = ClassifyController(
        photos, runner, open_classifier=lambda path, engine, batch, server: classifier
    )
    controller.load_model(Path("/fake/bundle"), "cpu", 4)
    runner.run_pending()
    assert controller.classifier is classifier
    return controller


def captions(photos: PhotoListModel) -> list[str]:
    return [record.caption() for record in photos.records]


def test_a_cancelled_run_leaves_photos_not_classified_and_they_can_be_classified_again(qapp) -> None:
    photos, runner = PhotoListModel(), InlineRunner()
    controller: ClassifyController | None = None

    def cancel_after_two(count: int) -> None:
        if count == 2:
            controller.cancel()

    fake = FakeClassifier(after_each=cancel_after_two)
    controller = loaded(fake, runner, photos)
    finished: list[bool] = []
    controller.finished.connect(finished.append)
    controller.add_found(names(6))
    assert captions(photos) == [CLASSIFYING_TEXT] * 6  # queued for a loaded model
    runner.run_pending()

    assert finished == [True]  # ended by the cancel
    assert [r.classified for r in photos.records] == [True, True, False, False, False, False]
    assert captions(photos)[2:] == [NOT_CLASSIFIED_TEXT] * 4
    assert photos.counts().not_classified == 4
    assert not controller.is_busy()

    fake.after_each = lambda count: None
    controller.add_found(names(6))  # the same photos again: the four not classified are queued
    runner.run_pending()
    assert fake.runs[-1] == names(6)[2:]
    assert all(r.classified for r in photos.records)


def test_classify_again_queues_only_the_photos_without_a_result(qapp) -> None:
    photos, runner = PhotoListModel(), InlineRunner()
    fake = FakeClassifier()
    controller = loaded(fake, runner, photos)
    photos.add_paths(names(3))  # shown, never queued (as after a failed run)
    controller.add_found(names(1, Path("/more")))
    runner.run_pending()
    assert controller.classify_again() == 3
    runner.run_pending()
    assert fake.runs[-1] == names(3) and all(r.classified for r in photos.records)
    assert controller.classify_again() == 0


def test_without_a_model_photos_are_not_classified_and_the_reason_is_given(qapp) -> None:
    photos, runner = PhotoListModel(), InlineRunner()

    def no_model(path: Path, engine: str, batch: int, server: str) -> FakeClassifier:
        raise BundleError(f"{path} holds no bundle.json")

    controller = ClassifyController(photos, runner, open_classifier=no_model)
    failures: list[str] = []
    controller.model_failed.connect(failures.append)
    controller.load_model(Path("/nowhere"), "cpu", 4)
    runner.run_pending()
    controller.add_found(names(2))
    runner.run_pending()
    assert failures == ["/nowhere holds no bundle.json"]
    assert captions(photos) == [NOT_CLASSIFIED_TEXT] * 2  # not "Classifying…" for ever
    assert not controller.is_busy()


def test_unreadable_photos_are_reported_and_taken_out(qapp) -> None:
    photos, runner = PhotoListModel(), InlineRunner()
    controller = loaded(FakeClassifier(), runner, photos)
    problems: list = []
    controller.problems.connect(problems.extend)
    controller.add_found([Path("/p/Red-1.png"), Path("/p/broken.png")])
    runner.run_pending()
    assert [r.path.name for r in photos.records] == ["Red-1.png"]
    assert problems == [(Path("/p/broken.png"), "not a photo")]


def auto_sorter(photos: PhotoListModel, runner: InlineRunner, target: Path, inbox: Path) -> SortController:
    settings = Settings(
        auto_sort=True, sort_target=str(target), auto_sort_mode="copy", watched_folders=[str(inbox)]
    )
    sorter = SortController(photos, runner, settings, confirm_undo=lambda preview: True)
    sorter.burst_quiet_ms = 200
    return sorter


def test_a_burst_of_watched_photos_is_one_sort_and_one_undo(qtbot, tmp_path: Path) -> None:
    inbox, target = tmp_path / "inbox", tmp_path / "sorted"
    photos, runner = PhotoListModel(), InlineRunner()
    classify = loaded(FakeClassifier(), runner, photos)
    sorter = auto_sorter(photos, runner, target, inbox)
    messages: list[str] = []
    sorter.message.connect(messages.append)
    for index in range(3):  # three hand-overs of the watcher, 50 ms apart
        photo = make_photo(inbox / f"Red-{index}.png", COLOURS["Red Cat"], seed=index)
        classify.add_found([photo], from_watch=True)
        sorter.photos_arrived([photo])
        runner.run_pending()
        qtbot.wait(50)
    assert list_journals() == []  # the burst is not over yet

    qtbot.waitUntil(lambda: runner.run_pending() or bool(list_journals()), timeout=5_000)
    runner.run_pending()
    assert len(list_journals()) == 1
    assert sorted(p.name for p in (target / "Red Cat").iterdir()) == ["Red-0.png", "Red-1.png", "Red-2.png"]
    assert any(m.startswith("Auto-sort: Copied 3 photos into") for m in messages)
    assert sorter.can_undo

    sorter.undo_last_sort()
    runner.run_pending()
    assert not any((target / "Red Cat").glob("*.png"))  # the one undo took the whole burst back
    assert not sorter.can_undo


def test_undo_with_nothing_to_undo_is_a_message_not_a_problem(qapp) -> None:
    photos, runner = PhotoListModel(), InlineRunner()
    asked: list = []
    sorter = SortController(
        photos, runner, Settings(), confirm_undo=lambda preview: asked.append(preview) or True
    )
    messages, problems, offered = [], [], []
    sorter.message.connect(messages.append)
    sorter.problems.connect(problems.append)
    sorter.undo_available.connect(offered.append)
    sorter.refresh_undo_state()
    sorter.undo_last_sort()
    runner.run_pending()
    assert offered == [False, False] and asked == [] and problems == []
    assert "no sort to undo" in messages[-1]


class FakeWatcher:
    """Records what the controller asks of a folder watcher; hands photos over when told to."""

    def __init__(self, on_ready) -> None:
        self.on_ready = on_ready
        self.folders: list[Path] = []
        self.ignored: list = []
        self.running = False

    def add_folder(self, folder) -> Path:
        path = Path(folder)
        if not path.is_dir():
            raise NotADirectoryError(f"cannot watch {path}: it is not an existing folder")
        self.folders.append(path)
        return path

    def remove_folder(self, folder) -> None:
        self.folders.remove(Path(folder))

    def set_ignored_folders(self, folders) -> None:
        self.ignored = list(folders)

    def expect(self, paths) -> None:
        pass

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


def test_watch_controller_keeps_settings_and_brings_photos_to_the_gui_thread(qtbot, tmp_path: Path) -> None:
    settings = Settings(watched_folders=[str(tmp_path / "gone")], sort_target=str(tmp_path / "out"))
    controller = WatchController(settings, make_watcher=FakeWatcher)
    problems, states = [], []
    controller.problems.connect(problems.extend)
    controller.state_changed.connect(states.append)
    controller.start()
    assert settings.watched_folders == [] and "gone" in problems[0][1]
    assert controller.watcher.ignored == [str(tmp_path / "out")]  # sorts land there: never news

    assert controller.add_folder(tmp_path) is None
    assert controller.add_folder(tmp_path / "missing") is not None
    controller.set_auto_sort(True)
    controller.set_mode("copy")
    assert states[-1].mode == "copy" and settings.auto_sort_mode == "copy"
    assert "copied into" in controller.describe()

    with qtbot.waitSignal(controller.photos_arrived) as arrived:
        controller.watcher.on_ready([tmp_path / "new.jpg"])  # as from the watcher's own thread
    assert arrived.args == [[tmp_path / "new.jpg"]]


def test_the_runner_logs_a_bugs_traceback_and_gives_one_line(qtbot) -> None:
    runner = TaskRunner()
    failures, done = [], []
    runner.failed.connect(lambda kind, reason, logged: failures.append((kind, reason, logged)))

    def broken(context) -> None:
        raise KeyError("a bug deep down")

    with qtbot.waitSignal(runner.finished, timeout=5_000):
        assert runner.start(Task("sort", broken, on_done=done.append, lane="files"))
        assert not runner.start(Task("undo", broken, lane="files"))  # one task per lane
    assert failures == [("sort", "'a bug deep down'", True)] and done == []
    log = log_path().read_text(encoding="utf-8")
    assert "sort failed" in log and "Traceback" in log and 'raise KeyError("a bug deep down")' in log

    def expected(context) -> None:
        raise BundleError("the bundle is damaged")

    with qtbot.waitSignal(runner.finished, timeout=5_000):
        runner.start(Task("model loading", expected))
    assert failures[-1] == ("model loading", "the bundle is damaged", False)
    assert "the bundle is damaged" not in log_path().read_text(encoding="utf-8")  # not a bug: no traceback


def test_the_runner_delivers_partial_results_and_progress_before_done(qtbot) -> None:
    runner = TaskRunner()
    seen: list = []

    def work(context) -> str:
        for part in range(3):
            context.partial(part)
        context.progress(3, 3)
        return "done"

    task = Task(
        "classification",
        work,
        on_partial=lambda value: seen.append(("partial", value)),
        on_progress=lambda done, total: seen.append(("progress", done, total)),
        on_done=lambda result: seen.append(("done", result)),
    )
    with qtbot.waitSignal(runner.finished, timeout=5_000):
        runner.start(task)
    assert seen == [("partial", 0), ("partial", 1), ("partial", 2), ("progress", 3, 3), ("done", "done")]
    assert not runner.is_busy()
