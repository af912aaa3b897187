"""Running the chosen model: each Hub task's own ``InferenceClient`` call, on the user's text, image or audio.

- :class:`Runner` routes a request among the tasks that can take its inputs and runs the chosen model (falling
  back to the next candidates, within those tasks); :class:`RunResult` is what it answered;
- :mod:`~hubroute.run.tasks` says, per Hub task, what it takes and which ``InferenceClient`` method runs it;
- :class:`Backend` is where models run (Inference Providers, each model's own URL, or an OpenAI-compatible
  server for chat models) and which credentials go there;
- :mod:`~hubroute.run.render` reads outputs as text and as JSON.
"""

from __future__ import annotations

from .attempts import Attempt, Candidate
from .backend import API_KEY_ENV, Backend
from .inputs import Media, MediaPolicy, RunInputs
from .runner import RunConfig, Runner, RunResult, TaskPlan, plan_tasks
from .tasks import CHAT_TASKS, TASKS, TaskSpec, task_spec

__all__ = [
    "Runner",
    "RunConfig",
    "RunResult",
    "TaskPlan",
    "plan_tasks",
    "Backend",
    "API_KEY_ENV",
    "Media",
    "MediaPolicy",
    "RunInputs",
    "Attempt",
    "Candidate",
    "TaskSpec",
    "TASKS",
    "CHAT_TASKS",
    "task_spec",
]
