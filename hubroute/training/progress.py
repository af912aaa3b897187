"""Training progress a person can follow: one bar per experience, and the Trainer's metrics as log lines.

:class:`TrainingProgress` replaces the :class:`transformers.Trainer`'s own progress callbacks (a bare bar, and
dictionaries of strings such as ``{'loss': '2.603', ...}``) in :class:`~hubroute.CARvETrainer`:

- a bar over the experience's optimizer steps, titled with what runs (e.g. ``carve seed 0 · experience 2/4
  mllm``), with its rate, ETA, the current loss and the phase;
- every logged metric as one formatted line (``carve seed 0 · experience 2/4 mllm: step 30/120 · loss 2.603 ·
  grad norm 3.12 · lr 1.98e-05 · epoch 0.25``) and a closing line with the time and mean loss.

With ``disable_tqdm`` (``--no-progress``) it shows and prints nothing; :func:`quiet_libraries` silences the
bars and info messages of transformers, datasets and huggingface_hub as well. It also times each optimizer
step (:attr:`TrainingProgress.step_times`), which the benchmarks report.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback

__all__ = ["TrainingProgress", "format_metrics", "quiet_libraries"]

_NAMES = {
    "loss": "loss",
    "grad_norm": "grad norm",
    "learning_rate": "lr",
    "epoch": "epoch",
}
_SKIPPED = {"total_flos"}


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4g}" if magnitude < 1 else f"{value:.3f}".rstrip("0").rstrip(".")


def format_metrics(logs: dict[str, Any], step: int | None = None, max_steps: int | None = None) -> str:
    """One readable line for a Trainer log entry: ``step 30/120 · loss 2.603 · grad norm 3.12 · lr 1.98e-05``.

    The end-of-training entry (``train_runtime`` ...) reads ``trained in 276.9 s (0.925 examples/s, 0.014
    steps/s) · mean loss 2.702``.

    Args:
        logs: The entry (``Trainer.log``'s dictionary).
        step: The global step, shown first when given.
        max_steps: The run's total steps.
    """
    logs = {k: v for k, v in logs.items() if k not in _SKIPPED}
    if "train_runtime" in logs:
        parts = [f"trained in {_number(logs.pop('train_runtime'))} s"]
        rates = [
            f"{_number(logs.pop(key))} {unit}/s"
            for key, unit in (("train_samples_per_second", "examples"), ("train_steps_per_second", "steps"))
            if key in logs
        ]
        if rates:
            parts[0] += f" ({', '.join(rates)})"
        if "train_loss" in logs:
            parts.append(f"mean loss {_number(logs.pop('train_loss'))}")
        logs.pop("epoch", None)
    elif step is None:
        parts = []
    else:
        parts = [f"step {step}/{max_steps}" if max_steps else f"step {step}"]
    parts += [f"{_NAMES.get(k, k.replace('_', ' '))} {_number(v)}" for k, v in logs.items()]
    return " · ".join(parts)


def quiet_libraries() -> None:
    """Silence the progress bars and the info/warning chatter of transformers, datasets and huggingface_hub
    (``--no-progress``): only errors, and hubroute's own results, are printed afterwards."""
    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    huggingface_hub.utils.logging.set_verbosity_error()


class TrainingProgress(TrainerCallback):
    """A bar over one experience's steps (rate, ETA, current loss, phase) and the metrics as log lines.

    Args:
        label: What runs, the bar's title and the log lines' prefix (e.g. ``"carve seed 0 · experience 2/4
            mllm"``).
        show: Show the bar and print the lines (``False``: quiet; step times are still taken).
        loss: Returns the current step's loss (the trainer's last computed loss), or ``None``.
        phase: Returns the current phase's name for the bar (e.g. ``"phase 1"``), or ``None``.
    """

    def __init__(self, label: str, show: bool = True, loss: Any = None, phase: Any = None) -> None:
        self.label = label
        self.show = show
        self._loss = loss
        self._phase = phase
        self.bar: Any = None
        self.step_times: list[float] = []
        """Seconds of each optimizer step (forward, backward, optimizer), in order."""
        self._started = 0.0

    def write(self, message: str) -> None:
        """Print a line under the bar (to stderr), when showing."""
        if self.show:
            tqdm.write(f"{self.label}: {message}", file=sys.stderr)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_times = []
        if self.show and state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps,
                desc=self.label,
                unit="step",
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_times.append(time.perf_counter() - self._started)
        if self.bar is None:
            return
        postfix = {}
        loss = self._loss() if self._loss is not None else None
        if loss is not None:
            postfix["loss"] = f"{loss:.3f}"
        phase = self._phase() if self._phase is not None else None
        if phase:
            postfix["phase"] = phase
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self.show and state.is_world_process_zero and logs:
            self.write(format_metrics(dict(logs), state.global_step, state.max_steps))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
