"""Install hints name a command that works for how the app was installed.

No package index carries catbreed-desktop, so `pip install 'catbreed-desktop[gpu]'` failed for
everyone. From a checkout (editable or not) the hint reinstalls that checkout with the extra, from
a wheel that wheel, from a repository that repository, and always with the running environment's pip.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from catbreed_desktop.core import install_hints
from catbreed_desktop.core.engines import inventory, onnx_runtime, tensorrt
from catbreed_desktop.core.engines.base import EngineUnavailable
from catbreed_desktop.core.engines.triton import client as triton_client
from catbreed_desktop.core.engines.triton import server as serving
from catbreed_desktop.core.install_hints import (
    InstallSource,
    install_extra_command,
    install_source,
    pip_command,
    pip_install_arguments,
    running_checkout,
)
from trainer.errors import TrainerError
from trainer.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "/home/me/Downloads/catbreed_desktop-0.1.0-py3-none-any.whl"


def direct_url(**record: object) -> str:
    return json.dumps(record)


def test_each_way_of_installing_gets_a_command_that_reinstalls_from_the_same_place() -> None:
    cases = {
        "editable": (
            install_source(None, direct_url(url="file:///src/cat%20breed", dir_info={"editable": True})),
            "-e '/src/cat breed[gpu]'",
        ),
        "folder": (
            install_source(None, direct_url(url="file:///src/catbreed", dir_info={})),
            "'/src/catbreed[gpu]'",
        ),
        "wheel": (
            install_source(None, direct_url(url=f"file://{WHEEL}", archive_info={})),
            f"'{WHEEL}[gpu]'",
        ),
        "wheel by URL": (
            install_source(None, direct_url(url="https://example.org/c.whl", archive_info={})),
            "'catbreed-desktop[gpu] @ https://example.org/c.whl'",
        ),
        "repository": (
            install_source(
                None,
                direct_url(url="https://example.org/c.git", vcs_info={"vcs": "git", "commit_id": "abc123"}),
            ),
            "'catbreed-desktop[gpu] @ git+https://example.org/c.git@abc123'",
        ),
        "index": (install_source(None, None), "'catbreed-desktop[gpu]'"),
        "unreadable record": (install_source(None, "{not json"), "'catbreed-desktop[gpu]'"),
    }
    for name, (source, expected) in cases.items():
        assert pip_install_arguments("gpu", source) == expected, name


def test_code_running_from_a_checkout_names_that_checkout_whatever_pip_recorded() -> None:
    elsewhere = direct_url(url="file:///another/checkout", dir_info={"editable": True})
    assert install_source(Path("/src/catbreed"), elsewhere) == InstallSource("editable", "/src/catbreed")
    # These tests run from a checkout: the hints name it, not a package index.
    assert running_checkout() == ROOT
    assert pip_install_arguments("cpu,serve") == f"-e '{ROOT}[cpu,serve]'"


def test_the_pip_is_the_running_environments_unless_that_environment_is_active(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = tmp_path / ".venv"
    (environment / "bin").mkdir(parents=True)
    (environment / "bin" / "pip").write_text("")
    monkeypatch.setattr(sys, "prefix", str(environment))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    if sys.platform != "win32":
        assert pip_command() == ".venv/bin/pip"  # as the README's set-up calls it
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert pip_command() == str(environment / "bin" / "pip")
    monkeypatch.setenv("VIRTUAL_ENV", str(environment))
    assert pip_command() == "pip"
    monkeypatch.setattr(sys, "prefix", "/usr")  # no virtual environment
    monkeypatch.delenv("VIRTUAL_ENV")
    assert pip_command() == "pip"


def _no_module(name: str) -> object:
    raise ImportError(f"No module named {name!r}")


def test_every_install_hint_of_the_app_and_the_trainer_comes_from_the_one_helper(
    monkeypatch: pytest.MonkeyPatch, colour_bundle, tmp_path: Path
) -> None:
    wheel = InstallSource("archive", WHEEL)
    monkeypatch.setattr(install_hints, "current_install_source", lambda: wheel)
    monkeypatch.setattr(install_hints, "pip_command", lambda: "PIP")
    hints: dict[str, str] = {}

    with pytest.raises(EngineUnavailable) as trt:
        tensorrt.load_toolkit(_no_module)  # type: ignore[arg-type]
    hints["tensorrt"] = str(trt.value)

    monkeypatch.setattr(onnx_runtime, "cuda_provider_installed", lambda: False)
    hints["gpu"] = onnx_runtime.cuda_unavailable_reason() or ""

    def no_onnxruntime(*args: object, **kwargs: object) -> None:
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(onnx_runtime, "OnnxRuntimeEngine", no_onnxruntime)
    hints["cpu"] = inventory._cpu_info(colour_bundle, "fp32").reason

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    with pytest.raises(EngineUnavailable) as grpc:
        triton_client._import_grpc_client()
    hints["triton"] = str(grpc.value)

    for module in ("pytriton", "pytriton.decorators"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EngineUnavailable) as serve:
        serving.serve(colour_bundle, None, serving.ServeOptions())  # type: ignore[arg-type]
    hints["cpu,serve"] = str(serve.value)

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(TrainerError) as mlflow:
        Tracker(tmp_path / "run", "run", mlflow_uri=str(tmp_path / "mlruns"))
    hints["mlflow"] = str(mlflow.value)

    for extra, hint in hints.items():
        assert f"'{WHEEL}[{extra}]'" in hint, hint
        assert "'catbreed-desktop[" not in hint
    assert f"PIP install '{WHEEL}[tensorrt]'" in hints["tensorrt"]
    assert f"PIP uninstall -y onnxruntime && PIP install '{WHEEL}[gpu]'" in hints["gpu"]
    assert f"serve-env/bin/pip install '{WHEEL}[cpu,serve]'" in hints["cpu,serve"]


def test_no_source_file_spells_an_install_command_of_its_own() -> None:
    """A hint written out by hand would name an index that has no catbreed-desktop again."""
    spelled = re.compile(r"pip install[^\n]*catbreed-desktop\[")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("catbreed_desktop", "trainer")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "install_hints.py" and spelled.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_extra_command_joins_the_pip_and_the_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_hints, "pip_command", lambda: os.path.join(".venv", "bin", "pip"))
    source = InstallSource("editable", "/src/catbreed")
    assert (
        install_extra_command("train", source)
        == f"{os.path.join('.venv', 'bin', 'pip')} install -e '/src/catbreed[train]'"
    )
