"""How hubroute is installed, in one place: the README, the cards and error messages quote these lines.

hubroute is not on the Python package index: it is installed from its source repository (or from a wheel
built from it, ``pip wheel --no-deps -w dist .``). torch comes first, from the CPU wheel index on a machine
without a GPU (the default index gives the CUDA build, several GB).
"""

from __future__ import annotations

__all__ = ["REPO_URL", "TORCH_CPU_INDEX", "TORCH_CPU_INSTALL", "install_command"]

REPO_URL = "https://github.com/collagelab/hubroute"
"""The source repository."""
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
"""PyTorch's CPU-only wheel index."""
TORCH_CPU_INSTALL = f"pip install torch --index-url {TORCH_CPU_INDEX}"
"""The CPU build of torch (on a GPU machine, the default ``pip install torch`` gives the CUDA build)."""


def install_command(extra: str | None = None) -> str:
    """The ``pip install`` line of hubroute from its repository, with an extra (e.g. ``"serve"``) if given."""
    name = f"hubroute[{extra}]" if extra else "hubroute"
    return f'pip install "{name} @ git+{REPO_URL}"'
