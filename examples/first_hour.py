"""A user's first hour with hubroute, command by command, against a local Hub that stands in for huggingface.co.

    python examples/first_hour.py --data ../shared/cmrbench --workdir runs/first-hour

Every step is the `hubroute` command a user types, run in a child process with ``HF_ENDPOINT`` pointing at a
local Hub (:mod:`hubroute.testing.hub_server`) that holds what the real Hub would:

1. the CMRBench dataset repo, published with ``hubroute bench publish`` to ``collagelab/cmrbench``, the repo
   ``--data`` reads by default;
2. the models of CMRBench's experiences 3 and 4 as the Hub shows them (a card around each model's
   description, its creation date).

Then, with every recipe default:

- ``hubroute train --experiences apibench-hf mllm hugging-bench-1 --output ROUTER`` (CMRBench from the Hub);
- ``hubroute update --router ROUTER --since 2025-10`` and then ``--since 2025-06``: the Hub's new models arrive
  in two updates, each behind the forgetting gate;
- ``hubroute push ROUTER collagelab/first-hour-router``, and ``hubroute route --json`` on the folder and on the
  repo (a fresh process that downloads it) must give the same answers.

Training three experiences takes 10-15 minutes on 2 cores; ``--router`` reuses a trained router (copied).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TOKEN = "hf_first_hour_write"
PROMPTS = [
    "Transcribe this interview and give me the text",
    "Find the cars and the people in this street photo",
    "Summarise this legal contract in three sentences",
]


def run(command: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """Run one command, echoing it; return its exit code and its output."""
    print(f"\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(command)}\n{output}")
    shown = [line for line in done.stdout.splitlines() if line.strip()][-14:]
    if "--json" in command and done.returncode == 0:  # the best model per prompt, not the JSON's tail
        shown = [f"  {prompt!r} -> {ranked[0]['model_id']} ({ranked[0]['score']:.4f})"
                 for prompt, ranked in zip(PROMPTS, json.loads(done.stdout))]  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("hubroute:")]
    print("\n".join(shown + errors))
    print(f"(exit code {done.returncode}, {time.perf_counter() - started:.0f} s)", flush=True)
    return done.returncode, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/cmrbench", help="The CMRBench folder to publish.")
    parser.add_argument(
        "--workdir", default="runs/first-hour", help="Folder of the Hub, the router and logs."
    )
    parser.add_argument("--router", default=None, help="A router trained on experiences 1-3, to reuse.")
    args = parser.parse_args()

    from hubroute.testing.hub_seed import cmrbench_models, seed_hub
    from hubroute.testing.hub_server import LocalHub

    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    hub = LocalHub(work / "hub")
    hub.add_token(TOKEN, "tester", orgs=["collagelab"], role="write")
    seeded = seed_hub(hub, cmrbench_models(args.data, ["hugging-bench-1", "hugging-bench-2"]))
    hub.start()
    print(f"Local Hub at {hub.endpoint}: {len(seeded.models)} CMRBench model repos (experiences 3 and 4)")
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(work / "hf-home"),
        "HF_TOKEN": TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TQDM_DISABLE": "1",
    }
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        env.pop(name, None)
    log = work / "commands.log"
    hubroute = [sys.executable, "-m", "hubroute.cli.main"]
    router = work / "router"
    results: dict[str, object] = {"endpoint": hub.endpoint}
    try:
        code, _ = run(
            [*hubroute, "bench", "publish", "--data", args.data, "--repo", "collagelab/cmrbench"], env, log
        )
        if code:
            return code
        if args.router:
            shutil.copytree(args.router, router, symlinks=False)
            print(f"\nReusing {args.router} (copied to {router})")
        else:
            started = time.perf_counter()
            code, _ = run(
                [*hubroute, "train", "--experiences", "apibench-hf", "mllm", "hugging-bench-1", "--output", str(router)],
                env, log,
            )  # fmt: skip
            results["train_s"] = round(time.perf_counter() - started, 1)
            if code:
                return code
        for number, since in enumerate(("2025-10", "2025-06"), start=1):
            summary = work / f"update-{number}.json"
            code, _ = run(
                [*hubroute, "update", "--router", str(router), "--since", since, "--no-progress", "--summary", str(summary)],
                env, log,
            )  # fmt: skip
            results[f"update_{number}"] = json.loads(summary.read_text()) if summary.is_file() else None
            results[f"update_{number}_exit_code"] = code
        code, _ = run([*hubroute, "push", str(router), "collagelab/first-hour-router"], env, log)
        results["push_exit_code"] = code
        answers = []
        for source in (str(router), "collagelab/first-hour-router"):
            code, out = run([*hubroute, "route", *PROMPTS, "--router", source, "--json"], env, log)
            answers.append(json.loads(out) if code == 0 else None)
        results["routes_identical"] = answers[0] is not None and answers[0] == answers[1]
        print(f"\nRouted from the folder and from the pushed repo, identical: {results['routes_identical']}")
    finally:
        (work / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        hub.stop()
    print(f"Wrote {work / 'results.json'} and {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
