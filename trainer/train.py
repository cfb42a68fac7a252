"""`train`: fine-tune an image classifier on the prepared split, resumably.

A plain PyTorch loop: AdamW, linear schedule with 10% warm-up, PIL augmentations, class-balanced
cross-entropy weights (no resampling). After each epoch the validation macro F1 decides whether
the model becomes WORKDIR/checkpoints/best (a `save_pretrained` folder). Model, optimizer,
scheduler, RNG and position (epoch, step) go to WORKDIR/checkpoints/last/state.pt after every
epoch, every `--save-every` steps and on Ctrl-C, so running the same command again continues
where it stopped. Sample order and augmentation are seeded by (seed, epoch, index), which makes
an interrupted-and-resumed run reproduce an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from catbreed_desktop.core.files import atomic_write
from catbreed_desktop.core.photos import Preprocessing, load_photo
from trainer.augment import CROP_AREA, DEFAULT_AUGMENT, AugmentOptions, augment
from trainer.breakdown import noisy_breeds_by_source
from trainer.dataset import (
    DatasetError,
    Sample,
    read_labels,
    read_manifest,
    read_summary,
    split_samples,
)
from trainer.errors import TrainerError
from trainer.metrics import classification_scores, source_mean_scores
from trainer.modeling import (
    TRAINING_FILE,
    ModelError,
    PatchDropout,
    build_model,
    forward_options,
    freeze_layers,
    preprocessing_for,
    resolve_device,
    run_on_photos,
    save_checkpoint,
)
from trainer.probe import PROBE_C, fit_probe
from trainer.progress import manual_bar
from trainer.tracking import Tracker
from trainer.weighting import balanced_breed_weights

STATE_FILE = "state.pt"
WARMUP_FRACTION = 0.1
LOG_EVERY = 10


class TrainingError(TrainerError):
    """Training cannot start or continue, with the reason in words."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a training run; the fields in `RESUME_KEYS` must match to resume."""

    base_model: str | None = None
    preset: str | None = None
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-4
    head_lr: float | None = None
    weight_decay: float = 1e-3
    image_size: int = 224
    freeze_layers: int = 0
    probe_head: bool = False
    seed: int = 83
    max_steps: int | None = None
    workers: int = 0
    save_every: int = 50
    mlflow_uri: str | None = None
    restart: bool = False
    label_smoothing: float = 0.0
    keep_patches: float = 1.0
    # (source name, weight) pairs: a source's photos count this much in the loss (0 leaves them out).
    source_weights: tuple[tuple[str, float], ...] = ()
    class_weighting: str = "balanced"  # or "none": every photo weighs the same whatever its breed
    crop_min_area: float = CROP_AREA[0]
    color_jitter: float = 0.0
    thumbnail_share: float = 0.0
    select_by: str = "pooled"  # or "source-mean": the mean of each source's validation macro F1
    device: str = "auto"  # not a resume key: a run started on a GPU may finish on the CPU
    precision: str = "auto"  # not a resume key either, for the same reason

    RESUME_KEYS = (
        "base_model",
        "preset",
        "epochs",
        "batch_size",
        "lr",
        "head_lr",
        "weight_decay",
        "image_size",
        "freeze_layers",
        "probe_head",
        "seed",
        "label_smoothing",
        "keep_patches",
        "source_weights",
        "class_weighting",
        "crop_min_area",
        "color_jitter",
        "thumbnail_share",
        "select_by",
    )

    def resume_identity(self) -> dict:
        identity = {key: getattr(self, key) for key in self.RESUME_KEYS}
        # As lists, so a saved state compares equal after its round trip through torch.save and JSON.
        identity["source_weights"] = [list(pair) for pair in self.source_weights]
        return identity

    def source_weight(self, source: str) -> float:
        return dict(self.source_weights).get(source, 1.0)


class AugmentedPhotos(Dataset):
    """Training photos, each a fresh augmented view seeded by (seed, epoch, index)."""

    def __init__(
        self,
        samples: list[Sample],
        label_index: dict[str, int],
        spec: Preprocessing,
        seed: int,
        options: AugmentOptions = DEFAULT_AUGMENT,
        weights: list[float] | None = None,
    ) -> None:
        self.samples = samples
        self.targets = [label_index[s.label] for s in samples]
        self.weights = weights if weights is not None else [1.0] * len(samples)
        self.spec = spec
        self.seed = seed
        self.options = options
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, float]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pixels = augment(load_photo(self.samples[index].path), self.spec, rng, self.options)
        return torch.from_numpy(pixels), self.targets[index], self.weights[index]


def parameter_groups(model: nn.Module, lr: float, head_lr: float | None) -> list[dict]:
    """Trainable parameters as optimizer groups; the new classifier head may learn faster.

    The head starts from random weights while the backbone starts pretrained, so a larger head
    rate reaches a good head within a few epochs without disturbing the backbone.
    """
    head: list[torch.nn.Parameter] = []
    body: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (head if name.startswith("classifier.") else body).append(parameter)
    rate = head_lr if head_lr is not None else lr
    return [group for group in ({"params": body, "lr": lr}, {"params": head, "lr": rate}) if group["params"]]


def fit_head_by_probe(
    model: nn.Module,
    samples: list[Sample],
    label_index: dict[str, int],
    spec: Preprocessing,
    seed: int,
    c: float = PROBE_C,
    device: str = "cpu",
    features: np.ndarray | None = None,
) -> float:
    """Start the classifier head from a logistic regression on the frozen features (LP-FT).

    A random head sends large, noisy gradients into the pretrained layers during the first
    steps and can distort features that were already good (Kumar et al., "Fine-Tuning can
    Distort Pretrained Features", 2022); a head that already classifies well lets fine-tuning
    refine them instead. Returns the probe's training accuracy.
    """
    head = model.classifier
    if not isinstance(head, nn.Linear):
        raise TrainingError(f"--probe-head needs a linear classifier head, not {type(head).__name__}")
    if features is None:
        _, features = run_on_photos(
            model, [s.path for s in samples], spec, description="probe features", device=device
        )
    targets = np.array([label_index[s.label] for s in samples])
    probe = fit_probe(features, targets, head.out_features, c, seed)
    weight, bias = probe.weight.T, probe.bias
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight).to(head.weight))
        head.bias.copy_(torch.from_numpy(bias).to(head.bias))
    return float(np.mean(probe.predict(features) == targets))


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# CPU flags of native bf16 arithmetic; without them PyTorch emulates bf16 matmuls.
NATIVE_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU computes bf16 natively (AMX or AVX-512 BF16); None where it cannot be told."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & NATIVE_BF16_CPU_FLAGS) if flags else None


def mixed_precision_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32.

    auto: bf16 where the GPU supports it, else fp16 (with a loss scaler); fp32 on the CPU, where a
    seed then reproduces a run bit for bit. bf16 on the CPU is asked for by name: on a CPU with
    AMX or AVX-512 BF16 it trains a ViT about 3x faster than fp32; only fp32 runs are tested to
    repeat bit for bit.
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "fp16":
            raise ModelError("--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
        return torch.bfloat16 if precision == "bf16" else None
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ModelError("--precision bf16, but this GPU has no bf16; use fp16 or auto")
    if precision == "fp16" or not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def class_weights(
    targets: list[int], num_labels: int, sample_weights: list[float] | None = None
) -> torch.Tensor:
    """`balanced_breed_weights` as the loss takes them."""
    return torch.tensor(balanced_breed_weights(targets, num_labels, sample_weights), dtype=torch.float32)


def weighted_loss(
    per_photo: torch.Tensor,
    targets: torch.Tensor,
    photo_weights: torch.Tensor,
    breed_weights: torch.Tensor | None,
) -> torch.Tensor:
    """The weighted mean of per-photo losses, as CrossEntropyLoss(weight=...) takes it, with each
    photo's source weight multiplied in."""
    weights = photo_weights if breed_weights is None else photo_weights * breed_weights[targets]
    return (per_photo * weights).sum() / weights.sum().clamp_min(1e-12)


def linear_warmup_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, round(total_steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_atomically(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A crash mid-write leaves the previous state intact.
    atomic_write(path, lambda stream: torch.save(payload, stream))


def _replace_folder(staging: Path, target: Path) -> None:
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


class Trainer:
    """One training run over a prepared work folder."""

    def __init__(self, workdir: str | Path, settings: TrainSettings, command_line: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.settings = settings
        self.command_line = command_line
        self.labels = read_labels(self.workdir)
        samples = read_manifest(self.workdir)
        # Photos label cleaning flagged would teach the model their wrong labels.
        train_split = split_samples(samples, "train")
        unflagged = [s for s in train_split if not s.flagged]
        self.flagged_left_out = len(train_split) - len(unflagged)
        self.train_samples = [s for s in unflagged if settings.source_weight(s.source) > 0]
        self.val_samples = split_samples(samples, "val")
        if not self.train_samples:
            raise DatasetError("the training split is empty; prepare more photos")
        if not self.val_samples:
            raise DatasetError("the validation split is empty; best-checkpoint selection needs it")
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.spec = preprocessing_for(settings.base_model, settings.preset, settings.image_size)
        self.device = resolve_device(settings.device)
        self.amp_dtype = mixed_precision_dtype(self.device, settings.precision)
        if self.amp_dtype == torch.bfloat16 and self.device.type == "cpu" and cpu_has_native_bf16() is False:
            # Measured on 2 cores with AVX-512 but no AMX: a full fine-tuning step of ViT-S/14 on 32
            # photos took 24 s in bf16 and 8.5 s in fp32 (about 4 s in bf16 on a CPU with AMX).
            print(
                "warning: this CPU has no AMX or AVX-512 BF16, so bf16 is emulated and trains about "
                "3x slower than --precision fp32",
                file=sys.stderr,
            )
        self.noisy_breeds = {
            name: set(breeds) for name, breeds in noisy_breeds_by_source(read_summary(self.workdir)).items()
        }
        self.checkpoints = self.workdir / "checkpoints"
        self.state_path = self.checkpoints / "last" / STATE_FILE
        self.best_dir = self.checkpoints / "best"

    # ------------------------------------------------------------------------------------------

    def run(self) -> dict:
        s = self.settings
        torch.manual_seed(s.seed)
        random.seed(s.seed)
        model = build_model(self.labels, s.base_model, s.preset, seed=s.seed)
        trainable = freeze_layers(model, s.freeze_layers)
        self.patch_dropout = PatchDropout(model, s.keep_patches, s.seed) if s.keep_patches < 1 else None
        model.to(self.device)
        options = forward_options(model, self.spec.size)
        dataset = AugmentedPhotos(
            self.train_samples,
            self.label_index,
            self.spec,
            s.seed,
            AugmentOptions(
                crop_min_area=s.crop_min_area, color_jitter=s.color_jitter, thumbnail_share=s.thumbnail_share
            ),
            [s.source_weight(sample.source) for sample in self.train_samples],
        )
        steps_per_epoch = math.ceil(len(dataset) / s.batch_size)
        total_steps = steps_per_epoch * s.epochs
        optimizer = torch.optim.AdamW(parameter_groups(model, s.lr, s.head_lr), weight_decay=s.weight_decay)
        scheduler = linear_warmup_schedule(optimizer, total_steps)
        breed_weights = (
            class_weights(dataset.targets, len(self.labels), dataset.weights).to(self.device)
            if s.class_weighting == "balanced"
            else None
        )
        per_photo_loss = nn.CrossEntropyLoss(reduction="none", label_smoothing=s.label_smoothing)

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor, photo_weights: torch.Tensor) -> torch.Tensor:
            return weighted_loss(per_photo_loss(logits, targets), targets, photo_weights, breed_weights)

        position = self._resume(model, optimizer, scheduler)
        if s.probe_head and position["global_step"] == 0:
            from trainer.cleaning import cached_features, features_identity

            # The untrained model's embedding is what `clean` cached, so its pass is not repeated.
            cached = cached_features(
                self.workdir,
                [sample.path for sample in self.train_samples],
                features_identity(s.base_model, s.preset, s.image_size),
            )
            accuracy = fit_head_by_probe(
                model,
                self.train_samples,
                self.label_index,
                self.spec,
                s.seed,
                device=self.device.type,
                features=cached,
            )
            print(
                f"head initialised from a logistic regression (training accuracy {accuracy:.4f})",
                file=sys.stderr,
            )
        if position["epoch"] >= s.epochs:
            print(
                f"training already finished ({s.epochs} epochs, best validation macro F1 "
                f"{position['best_macro_f1']:.4f}); pass --restart to train again",
                file=sys.stderr,
            )
            return position
        tracker = Tracker(
            self.workdir / "runs" / position["run"],
            position["run"],
            s.mlflow_uri,
            position.get("mlflow_run_id"),
        )
        position["mlflow_run_id"] = tracker.mlflow_run_id
        if position["global_step"] == 0:
            tracker.log_params(
                dataclasses.asdict(s)
                | {
                    "labels": len(self.labels),
                    "train_photos": len(dataset),
                    "val_photos": len(self.val_samples),
                    "trainable_parameters": trainable,
                    "flagged_train_photos_left_out": self.flagged_left_out,
                    "device": str(self.device),
                    "mixed_precision": str(self.amp_dtype).removeprefix("torch.")
                    if self.amp_dtype
                    else "off",
                    "preprocessing": self.spec.to_dict(),
                }
            )
        else:
            print(
                f"resuming run {position['run']} at epoch {position['epoch'] + 1}, "
                f"step {position['global_step']} of {total_steps}",
                file=sys.stderr,
            )
        progress = manual_bar(total_steps, "training", initial=position["global_step"])
        state = (model, optimizer, scheduler)
        # fp16 needs loss scaling to keep small gradients; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        try:
            finished = self._loop(
                state, dataset, loss_fn, options, position, tracker, progress, steps_per_epoch
            )
        except KeyboardInterrupt:
            self._save_last(state, position)
            progress.close()
            tracker.close()
            print(
                f"\ninterrupted; saved step {position['global_step']}: run the same command to resume",
                file=sys.stderr,
            )
            raise
        progress.close()
        tracker.close()
        position["finished"] = finished
        return position

    def _loop(self, state, dataset, loss_fn, options, position, tracker, progress, steps_per_epoch) -> bool:
        model, optimizer, scheduler = state
        s = self.settings
        running_loss, running_count = 0.0, 0
        while position["epoch"] < s.epochs:
            epoch = position["epoch"]
            dataset.epoch = epoch
            order = np.random.default_rng([s.seed, epoch]).permutation(len(dataset)).tolist()
            loader = DataLoader(
                dataset,
                batch_size=s.batch_size,
                sampler=order[position["step_in_epoch"] * s.batch_size :],
                num_workers=s.workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=False,
            )
            model.train()
            for pixels, targets, photo_weights in loader:
                pixels = pixels.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                photo_weights = photo_weights.to(self.device, dtype=torch.float32, non_blocking=True)
                if self.patch_dropout is not None:
                    self.patch_dropout.seed_step(position["global_step"])
                with self._autocast():
                    logits = model(pixel_values=pixels, **options).logits
                    loss = loss_fn(logits.float(), targets, photo_weights)
                optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                position["global_step"] += 1
                position["step_in_epoch"] += 1
                progress.update(1)
                progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                running_loss += loss.item() * len(targets)
                running_count += len(targets)
                if position["global_step"] % LOG_EVERY == 0:
                    tracker.log_metrics(
                        position["global_step"],
                        {"train_loss": running_loss / running_count, "lr": scheduler.get_last_lr()[0]},
                    )
                    running_loss, running_count = 0.0, 0
                if position["global_step"] % s.save_every == 0:
                    self._save_last(state, position)
                if s.max_steps is not None and position["global_step"] >= s.max_steps:
                    self._save_last(state, position)
                    progress.write(
                        f"stopped at step {position['global_step']} (--max-steps); "
                        "run without --max-steps to continue",
                        file=sys.stderr,
                    )
                    return False
            scores = self._validate(model)
            tracker.log_metrics(
                position["global_step"],
                {"epoch": epoch + 1, "val_accuracy": scores["accuracy"], "val_macro_f1": scores["macro_f1"]}
                | {f"val_macro_f1_{name}": value for name, value in scores["per_source_macro_f1"].items()}
                | {"val_source_mean_macro_f1": scores["source_mean_macro_f1"]},
            )
            chosen = scores["source_mean_macro_f1"] if s.select_by == "source-mean" else scores["macro_f1"]
            if chosen > position["best_macro_f1"]:
                position["best_macro_f1"] = chosen
                position["best_epoch"] = epoch + 1
                self._save_best(model, scores, epoch + 1, position["run"])
            position["epoch"] += 1
            position["step_in_epoch"] = 0
            self._save_last(state, position)
            progress.write(
                f"epoch {epoch + 1}/{s.epochs}: validation accuracy {scores['accuracy']:.4f}, "
                f"macro F1 {scores['macro_f1']:.4f}, per source "
                + ", ".join(f"{k} {v:.4f}" for k, v in scores["per_source_macro_f1"].items())
                + f", mean {scores['source_mean_macro_f1']:.4f} "
                f"(best {s.select_by} {position['best_macro_f1']:.4f}, epoch {position['best_epoch']})",
                file=sys.stderr,
            )
        return True

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _validate(self, model: nn.Module) -> dict:
        model.eval()
        logits, _ = run_on_photos(
            model,
            [s.path for s in self.val_samples],
            self.spec,
            description="validating",
            device=self.device.type,
        )
        targets = [self.label_index[s.label] for s in self.val_samples]
        predictions = logits.argmax(axis=1).tolist()
        return classification_scores(targets, predictions, len(self.labels)) | source_mean_scores(
            targets, predictions, [s.source for s in self.val_samples], self.labels, self.noisy_breeds
        )

    def _save_best(self, model: nn.Module, scores: dict, epoch: int, run: str) -> None:
        staging = self.checkpoints / "best.partial"
        shutil.rmtree(staging, ignore_errors=True)
        save_checkpoint(model, staging, self.spec, self.settings.base_model, self.settings.preset)
        (staging / "validation.json").write_text(json.dumps(scores | {"epoch": epoch}, indent=2) + "\n")
        # The export copies this into the bundle, so a shipped model says how it was trained.
        recipe = {
            "run": run,
            "epoch": epoch,
            "settings": dataclasses.asdict(self.settings),
            "command_line": self.command_line,
        }
        (staging / TRAINING_FILE).write_text(json.dumps(recipe, indent=2) + "\n")
        _replace_folder(staging, self.best_dir)

    def _save_last(self, state, position: dict) -> None:
        model, optimizer, scheduler = state
        _save_atomically(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(),
                "position": dict(position),
                "settings": self.settings.resume_identity(),
            },
            self.state_path,
        )

    def _resume(self, model, optimizer, scheduler) -> dict:
        fresh = {
            "run": time.strftime("run-%Y%m%d-%H%M%S"),
            "epoch": 0,
            "step_in_epoch": 0,
            "global_step": 0,
            "best_macro_f1": -1.0,
            "best_epoch": 0,
            "mlflow_run_id": None,
        }
        if self.settings.restart or not self.state_path.is_file():
            return fresh
        saved = torch.load(self.state_path, map_location="cpu", weights_only=False)
        identity = self.settings.resume_identity()
        # A key added since the state was saved counts as its default, so older runs still resume.
        recorded = TrainSettings().resume_identity() | saved["settings"]
        if recorded != identity:
            changed = ", ".join(
                f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in identity.items() if recorded.get(k) != v
            )
            raise TrainingError(
                f"{self.state_path} was saved by a run with other settings ({changed}); "
                "rerun with the same settings to resume, or pass --restart to start over"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        return fresh | saved["position"]


def train(workdir: str | Path, settings: TrainSettings, command_line: str | None = None) -> dict:
    """Train (or resume) and return the final position: epoch, global_step, best_macro_f1, run, finished."""
    return Trainer(workdir, settings, command_line).run()
