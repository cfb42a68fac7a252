"""`python -m trainer triton-repo` writes model, labels and config where Triton looks, and refuses a broken bundle.

Unlike test_triton_repo.py, these need no tritonclient.
"""

from __future__ import annotations

from pathlib import Path

from factories import make_ood_colour_bundle

from trainer.cli import main as trainer_main
from trainer.triton import write_triton_repository


def test_triton_repository_holds_model_labels_and_config(tmp_path: Path) -> None:
    bundle = make_ood_colour_bundle(tmp_path / "bundle")

    model_dir = write_triton_repository(bundle.path, tmp_path / "repo", name="cats", max_batch_size=16)

    assert (model_dir / "1" / "model.onnx").read_bytes() == bundle.model_path.read_bytes()
    assert (model_dir / "labels.txt").read_text().split("\n")[:3] == list(bundle.labels)
    config = (model_dir / "config.pbtxt").read_text()
    assert 'name: "cats"' in config and "max_batch_size: 16" in config
    assert "dims: [ 3, 32, 32 ]" in config
    assert 'name: "logits"' in config and "dims: [ 3 ]" in config
    assert 'name: "embedding"' in config


def test_triton_repo_command_refuses_a_broken_bundle(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    status = trainer_main(["triton-repo", str(tmp_path / "empty"), "--out", str(tmp_path / "repo")])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    # One line on stderr, as every other trainer error (it was "error: ..." on stdout).
    assert err == f"python -m trainer: model bundle {tmp_path / 'empty'} has no bundle.json\n"
    assert not (tmp_path / "repo").exists()
