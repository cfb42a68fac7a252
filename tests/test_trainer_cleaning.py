"""Two photo sources in one manifest, label cleaning, subsets and the training device."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from trainer_data import synthetic_photo

from trainer.cleaning import CleaningSettings, clean, confident_verdicts, held_out_probabilities
from trainer.cli import main as trainer_main
from trainer.dataset import prepare, read_labels, read_manifest, split_groups, subset

COLOURS = {
    "Bengal": (200, 40, 40),
    "Birman": (40, 180, 60),
    "Siamese": (40, 60, 200),
    "Korat": (120, 120, 120),
}


def _source(root: Path, name: str, breeds: dict[str, int], seed: int, noisy: tuple[str, ...] = ()) -> Path:
    folder = root / name
    rows = []
    for number, (breed, count) in enumerate(breeds.items()):
        for index in range(count):
            path = folder / breed / f"{breed}_{index:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            synthetic_photo(COLOURS[breed], seed=seed + 100 * number + index).save(path)
            rows.append(
                (f"{breed}/{path.name}", breed, "noisy (shelter labels)" if breed in noisy else "good")
            )
    with open(folder / "MANIFEST.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "breed", "label_quality"])
        writer.writerows(rows)
    return folder


@pytest.fixture()
def two_sources(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    first = _source(data, "first-cats", {"Bengal": 20, "Birman": 20, "Siamese": 20}, seed=1)
    second = _source(
        data, "second-cats", {"Bengal": 15, "Birman": 15, "Korat": 6}, seed=5000, noisy=("Birman",)
    )
    return first, second


def test_prepare_records_each_photos_source_and_gives_each_source_test_photos(two_sources, tmp_path):
    workdir = tmp_path / "work"
    summary = prepare(list(two_sources), workdir)
    samples = read_manifest(workdir)
    assert {s.source for s in samples} == {"first-cats", "second-cats"}
    assert all(s.path.parent.parent.name == s.source for s in samples)
    # Stratified by breed and source: every (breed, source) pair has test photos of its own.
    for source, breeds in (
        ("first-cats", ("Bengal", "Birman", "Siamese")),
        ("second-cats", ("Bengal", "Birman")),
    ):
        for breed in breeds:
            tests = [s for s in samples if s.source == source and s.label == breed and s.split == "test"]
            assert len(tests) == round(20 * 0.2 if source == "first-cats" else 15 * 0.2)
    by_name = {entry["name"]: entry for entry in summary["sources"]}
    assert by_name["second-cats"]["noisy_breeds"] == ["Birman"]
    assert by_name["first-cats"]["noisy_breeds"] == []
    assert by_name["second-cats"]["path"] == "second-cats"  # relative to the data root
    assert not any(str(entry["path"]).startswith("/") for entry in summary["sources"])


def test_split_by_breed_and_source_is_the_breed_split_for_one_source():
    labels = ["a"] * 10 + ["b"] * 10
    groups = list(range(20))
    assert split_groups(labels, groups, seed=83) == split_groups(labels, groups, seed=83, sources=["x"] * 20)


def test_verdicts_flag_only_a_confidently_rejected_label():
    probabilities = np.array(
        [
            [0.02, 0.90, 0.08],  # given 0: rejected, breed 1 confident -> flagged
            [0.04, 0.50, 0.46],  # given 0: unlikely, but nothing else confident -> kept
            [0.30, 0.65, 0.05],  # given 0: plausible -> kept
            [0.01, 0.01, 0.98],  # given 2: agreed -> kept
        ]
    )
    verdicts = confident_verdicts(probabilities, np.array([0, 0, 0, 2]), ["A", "B", "C"], 0.05, 0.6)
    assert [v.flagged for v in verdicts] == [True, False, False, False]
    assert verdicts[0].suggested == "B" and verdicts[0].suggested_probability == pytest.approx(0.9)


def test_test_photos_are_judged_without_their_own_labels():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1], 30)
    features = rng.normal(size=(60, 4)) + targets[:, None] * 3.0
    splits = ["train"] * 20 + ["test"] * 10 + ["train"] * 20 + ["test"] * 10
    flipped = targets.copy()
    flipped[20:30] = 1  # every test label of breed 0 wrong: they must not shape anything
    first = held_out_probabilities(features, targets, splits, list(range(60)), 2, folds=4, seed=83)
    second = held_out_probabilities(features, flipped, splits, list(range(60)), 2, folds=4, seed=83)
    np.testing.assert_allclose(first, second)
    assert (first[20:30].argmax(axis=1) == 0).all()


def test_clean_flags_planted_mislabels_leaves_out_thin_breeds_and_writes_the_review(two_sources, tmp_path):
    first, second = two_sources
    # Plant three red Bengal photos in the second source's Birman (green) folder.
    for index in range(3):
        synthetic_photo(COLOURS["Bengal"], seed=9000 + index).save(second / "Birman" / f"planted_{index}.png")
    workdir = tmp_path / "work"
    prepare([first, second], workdir)
    # The tiny untrained model separates colours less sharply than DINOv2 does breeds.
    report = clean(workdir, CleaningSettings(preset="tiny", min_clean_photos=10, folds=3, max_given=0.2))

    samples = read_manifest(workdir)
    flagged = {s.path.name for s in samples if s.flagged}
    assert {f"planted_{i}.png" for i in range(3)} <= flagged
    assert len(flagged) <= 6  # the colour-coded photos themselves are clean
    assert "Korat" not in read_labels(workdir)  # 6 photos: fewer than 10 clean ones
    assert all(s.label != "Korat" for s in samples)
    summary = json.loads((workdir / "summary.json").read_text())
    assert "Korat" in summary["left_out_breeds"]
    assert summary["cleaning"]["flagged"] == report["flagged"] == len(flagged)
    with open(workdir / "label_review.csv", newline="") as handle:
        review = list(csv.DictReader(handle))
    assert {Path(row["path"]).name for row in review} == flagged
    assert all(row["suggested"] == "Bengal" for row in review if "planted_" in row["path"])
    assert (workdir / "label_review" / "Birman.png").is_file()


def test_subset_keeps_the_splits_of_the_photos_it_keeps(two_sources, tmp_path):
    workdir = tmp_path / "work"
    prepare(list(two_sources), workdir)
    full = {s.path: s for s in read_manifest(workdir)}

    only_first = subset(workdir, tmp_path / "first", sources=["first-cats"])
    kept = read_manifest(tmp_path / "first")
    assert {s.source for s in kept} == {"first-cats"}
    assert all(full[s.path].split == s.split for s in kept)
    assert only_first["subset_of"]["sources"] == ["first-cats"]

    subset(workdir, tmp_path / "shared", breeds_of_source="first-cats")
    assert read_labels(tmp_path / "shared") == ["Bengal", "Birman", "Siamese"]
    assert {s.source for s in read_manifest(tmp_path / "shared")} == {"first-cats", "second-cats"}


def test_subset_of_an_unknown_source_is_a_clear_error(two_sources, tmp_path, capsys):
    prepare(list(two_sources), tmp_path / "work")
    code = trainer_main(["subset", str(tmp_path / "work"), "--out", str(tmp_path / "x"), "--source", "nope"])
    assert code == 2
    assert "no source 'nope'" in capsys.readouterr().err


def test_training_on_cuda_without_a_gpu_is_a_clear_error(two_sources, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    prepare(list(two_sources), tmp_path / "work")
    code = trainer_main(["train", str(tmp_path / "work"), "--preset", "tiny", "--device", "cuda"])
    assert code == 2
    assert "PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_precision_auto_is_fp32_on_the_cpu_and_bf16_there_is_asked_for_by_name():
    import torch

    from trainer.modeling import ModelError
    from trainer.train import mixed_precision_dtype

    cpu = torch.device("cpu")
    assert mixed_precision_dtype(cpu) is None
    assert mixed_precision_dtype(cpu, "fp32") is None
    assert mixed_precision_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ModelError, match="fp16 needs a CUDA GPU"):
        mixed_precision_dtype(cpu, "fp16")
    with pytest.raises(ModelError, match="unknown precision"):
        mixed_precision_dtype(cpu, "int8")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from trainer.train import cpu_has_native_bf16

    amx, avx512 = tmp_path / "amx", tmp_path / "avx512"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n")
    avx512.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\n")
    assert cpu_has_native_bf16(amx) is True
    assert cpu_has_native_bf16(avx512) is False
    assert cpu_has_native_bf16(tmp_path / "missing") is None
    (tmp_path / "no-flags").write_text("Processor\t: AArch64\n")
    assert cpu_has_native_bf16(tmp_path / "no-flags") is None


def test_cpu_bf16_training_with_label_smoothing_records_both_and_resumes_only_with_the_same_smoothing(
    two_sources, tmp_path, capsys, monkeypatch
):
    import torch

    import trainer.train

    workdir = tmp_path / "work"
    prepare(list(two_sources), workdir)
    common = ["train", str(workdir), "--preset", "tiny", "--epochs", "1", "--device", "cpu"]
    monkeypatch.setattr(trainer.train, "cpu_has_native_bf16", lambda: False)
    assert trainer_main([*common, "--precision", "bf16", "--label-smoothing", "0.1"]) == 0
    assert "bf16 is emulated" in capsys.readouterr().err
    (run,) = (workdir / "runs").iterdir()
    params = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert (params["mixed_precision"], params["label_smoothing"], params["precision"]) == (
        "bfloat16",
        0.1,
        "bf16",
    )
    assert (workdir / "checkpoints" / "best" / "model.safetensors").is_file()

    capsys.readouterr()
    assert trainer_main([*common, "--label-smoothing", "0.2"]) == 2
    assert "label_smoothing 0.1 -> 0.2" in capsys.readouterr().err

    # A state saved before label smoothing existed resumes as a run without it.
    state_path = workdir / "checkpoints" / "last" / "state.pt"
    state = torch.load(state_path, weights_only=False)
    del state["settings"]["label_smoothing"]
    torch.save(state, state_path)
    assert trainer_main(common) == 0
    assert "training already finished" in capsys.readouterr().err


def test_flagged_photos_are_left_out_of_training_and_cpu_runs_repeat_exactly(two_sources, tmp_path):
    from trainer.train import Trainer, TrainSettings

    workdir = tmp_path / "work"
    prepare(list(two_sources), workdir)
    clean(workdir, CleaningSettings(preset="tiny", min_clean_photos=5, folds=3))
    samples = read_manifest(workdir)
    trainer = Trainer(workdir, TrainSettings(preset="tiny", device="auto"))
    assert {s.path for s in trainer.train_samples} == {
        s.path for s in samples if s.split == "train" and not s.flagged
    }

    settings = TrainSettings(preset="tiny", epochs=1, batch_size=8, device="cpu", restart=True)
    weights = []
    for _ in range(2):
        Trainer(workdir, settings).run()
        from safetensors.numpy import load_file

        weights.append(load_file(workdir / "checkpoints" / "best" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])


def test_prepare_clean_and_train_record_their_command_lines_for_the_cards_recipe(two_sources, tmp_path):
    from trainer.card_data import recipe_section

    workdir = tmp_path / "work"
    first, second = (str(path) for path in two_sources)
    steps = [
        ["prepare", "--data", first, "--data", second, "--out", str(workdir)],
        ["clean", str(workdir), "--preset", "tiny", "--folds", "3", "--min-clean-photos", "5"],
        ["train", str(workdir), "--preset", "tiny", "--epochs", "1", "--device", "cpu"],
    ]
    for step in steps:
        assert trainer_main(step) == 0

    summary = json.loads((workdir / "summary.json").read_text())
    training = json.loads((workdir / "checkpoints" / "best" / "training.json").read_text())
    assert summary["command_line"].startswith("python -m trainer prepare --data ")
    assert summary["cleaning"]["command_line"].endswith("--folds 3 --min-clean-photos 5")
    assert training["command_line"].endswith("--preset tiny --epochs 1 --device cpu")
    recipe = "\n".join(recipe_section(summary, training, {}, {}))
    assert "- prepare: `python -m trainer prepare" in recipe
    assert "- cleaning: `python -m trainer clean" in recipe
    assert "- train: `python -m trainer train" in recipe
    # A checkpoint from before train recorded its command: the line is rebuilt from its settings.
    older = {k: v for k, v in training.items() if k != "command_line"}
    rebuilt = "\n".join(recipe_section(summary, older, {}, {}))
    assert (
        "- train (rebuilt from training.json's settings): `python -m trainer train WORKDIR --preset tiny --epochs 1"
        in rebuilt
    )
