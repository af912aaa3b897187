"""A CMRBench run that survives a stop: each finished (method, seed, experience) cell kept as it completes.

A :class:`CellStore` is a folder beside the results file (``results/cmrbench.partial`` for
``results/cmrbench.json``):

- ``run.json``: what the cells depend on (data, experiences, recipe, router architecture); a rerun continues
  only with the same settings;
- ``cells/<method>.seed<seed>.<t>.json``: one finished cell, written atomically: the scores on every test set
  seen so far after experience ``t``, the times, and the random state to continue from;
- ``routers/<method>.seed<seed>.<t>/``: the trained router after the last finished experience of a trained
  method (the previous one is deleted once the next cell is written);
- ``work/``: the Trainer's output folder (nothing is written in the system's temp dir).

A rerun with the same arguments reads the finished cells, restores the router and the random state of the last
one, and continues with the next experience, so its results equal an uninterrupted run's. The folder is deleted
once the results file is written.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils.io import write_json
from ..errors import DataFormatError

__all__ = ["CellStore", "rng_state", "restore_rng_state", "state_folder"]

_FORMAT = 1


def state_folder(output: str | Path) -> Path:
    """The folder that keeps the finished cells of a run writing ``output`` (``results/x.json`` ->
    ``results/x.partial``)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.partial")


def rng_state() -> dict[str, Any]:
    """The random state of Python, NumPy and torch (CPU and CUDA), as JSON."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore a state taken by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def _describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                inner = [
                    f"{key}.{k} {old[key].get(k)!r} -> {new[key].get(k)!r}"
                    for k in sorted(set(old[key]) | set(new[key]))
                    if old[key].get(k) != new[key].get(k)
                ]
                changed.extend(inner)
            else:
                changed.append(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    return ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


class CellStore:
    """The finished cells of one CMRBench run, kept in ``folder`` (see the module docstring).

    Args:
        folder: The state folder (created if needed).
        settings: What the cells depend on (JSON); a folder holding cells of other settings is refused.
        restart: Discard whatever the folder holds.

    Raises:
        DataFormatError: The folder holds a stopped run with other settings (the message names what differs
            and the fix), or is not such a folder.
    """

    def __init__(self, folder: str | Path, settings: dict[str, Any], restart: bool = False) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        run_file = self.folder / "run.json"
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        if self.folder.exists() and any(self.folder.iterdir()):
            try:
                saved = json.loads(run_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise DataFormatError(
                    f"{self.folder} exists but is not the state of a stopped CMRBench run ({err}); move it away, "
                    "or pass --restart to delete it."
                ) from None
            if saved.get("settings") != self.settings:
                raise DataFormatError(
                    f"{self.folder} holds a stopped CMRBench run with other settings "
                    f"({_describe_change(saved.get('settings') or {}, self.settings)}): rerun with its settings to "
                    "continue it, write elsewhere with --output, or pass --restart to discard it."
                )
        else:
            write_json(run_file, {"format": _FORMAT, "settings": self.settings})

    @staticmethod
    def _name(method: str, seed: int, t: int) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_-]', '_', method)}.seed{seed}.{t}"

    @property
    def work_dir(self) -> Path:
        """Where the Trainer's output folder goes."""
        return self.folder / "work"

    def finished(self) -> list[str]:
        """The names of the finished cells, sorted."""
        return sorted(p.stem for p in (self.folder / "cells").glob("*.json"))

    def get(self, method: str, seed: int, t: int) -> dict[str, Any] | None:
        """The finished cell ``(method, seed, t)``, or ``None``."""
        path = self.folder / "cells" / f"{self._name(method, seed, t)}.json"
        if not path.is_file():
            return None
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def put(self, method: str, seed: int, t: int, cell: dict[str, Any]) -> None:
        """Write a finished cell (atomically)."""
        write_json(self.folder / "cells" / f"{self._name(method, seed, t)}.json", cell)

    def router_dir(self, method: str, seed: int, t: int) -> Path:
        """The folder of the router trained up to experience ``t`` (its parent holds nothing else)."""
        return self.folder / "routers" / self._name(method, seed, t) / "router"

    def drop_router(self, method: str, seed: int, t: int) -> None:
        """Delete the router kept after experience ``t`` (a later one replaces it)."""
        shutil.rmtree(self.router_dir(method, seed, t).parent, ignore_errors=True)

    def remove(self) -> None:
        """Delete the folder (the run is finished and its results written)."""
        shutil.rmtree(self.folder, ignore_errors=True)
