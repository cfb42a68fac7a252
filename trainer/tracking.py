"""Experiment tracking: every run appends params and metrics to WORKDIR/runs/<run>/metrics.jsonl,
and to MLflow as well when a tracking URI is given (the optional `mlflow` extra, imported lazily)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from catbreed_desktop.core.install_hints import install_extra_command
from trainer.errors import TrainerError


class TrackingError(TrainerError):
    """Tracking that was asked for but cannot run (e.g. MLflow not installed)."""


class Tracker:
    """Appends JSON lines `{"kind": "params"|"metrics", "time", "step", ...}` and mirrors them to MLflow."""

    def __init__(
        self, run_dir: Path, run_name: str, mlflow_uri: str | None = None, mlflow_run_id: str | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._mlflow = None
        self.mlflow_run_id: str | None = None
        if mlflow_uri:
            try:
                import mlflow
            except ImportError:
                raise TrackingError(
                    f"--mlflow-uri needs MLflow: install it with `{install_extra_command('mlflow')}`, "
                    "or leave --mlflow-uri out to log to metrics.jsonl only"
                ) from None
            mlflow.set_tracking_uri(mlflow_uri)
            mlflow.set_experiment("catbreed")
            run = (
                mlflow.start_run(run_id=mlflow_run_id)
                if mlflow_run_id
                else mlflow.start_run(run_name=run_name)
            )
            self._mlflow = mlflow
            self.mlflow_run_id = run.info.run_id

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        self._append({"kind": "params", "time": time.time(), **params})
        if self._mlflow is not None:
            self._mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._append({"kind": "metrics", "time": time.time(), "step": step, **metrics})
        if self._mlflow is not None:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
