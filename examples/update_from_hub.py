"""Keep a router current with the Hub: crawl the models created since a date and learn them.

    python examples/update_from_hub.py --router collagelab/carve --since 2026-05 --output routers/carve \\
        --pipeline-tags text-to-image automatic-speech-recognition --min-downloads 100 --max-models 300

The same as ``hubroute update`` (see ``hubroute update --help``), step by step with the Python API:

1. crawl the Hub's models created since ``--since`` (resumable: run it again after an interruption);
2. turn their cards into an experience of (prompt, model) pairs and look at a few prompts;
3. update the router: cold start, continual step, forgetting gate, atomic save (and push with ``--push``).
"""

from __future__ import annotations

import argparse

from hubroute import ForgettingGateError
from hubroute.update.crawl import crawl_hub
from hubroute.update.experience import build_experience
from hubroute.update.pipeline import UpdateConfig, update_router


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--router", required=True, help="Router folder or Hub repo id.")
    parser.add_argument("--since", required=True, help="YYYY-MM or YYYY-MM-DD.")
    parser.add_argument("--output", required=True, help="Folder of the updated router.")
    parser.add_argument("--push", default=None, help="Hub repo to push the updated router to (tagged).")
    parser.add_argument("--pipeline-tags", nargs="*", default=[])
    parser.add_argument("--min-downloads", type=int, default=0)
    parser.add_argument("--max-models", type=int, default=None)
    args = parser.parse_args()

    # Every option of the update; `since` is parsed here, once (a bad date fails now, not after the crawl).
    config = UpdateConfig(
        router=args.router, since=args.since, output=args.output, push=args.push,
        pipeline_tags=args.pipeline_tags, min_downloads=args.min_downloads, max_models=args.max_models,
        state_path=f"{args.output}.update/crawl_state.jsonl",
    )  # fmt: skip

    # 1-2. Crawl (the update below resumes from the same state and fetches nothing twice) and preview prompts.
    crawled = crawl_hub(config.since, filters=config.crawl_filters(), state_path=config.state_path)
    print(crawled.describe())
    if crawled.records:
        preview = build_experience(crawled.records[:3], prompts_per_model=4)
        for row in preview:
            print(f"  {row['model_id']:<45} {row['prompt']}")

    # 3. Update: cold start, train with replay and anchors, gate on forgetting, save atomically, push.
    try:
        summary = update_router(config)
    except ForgettingGateError as err:
        print(err.summary.format())  # type: ignore[attr-defined]
        raise SystemExit(f"Not saved: {err}") from err
    print(summary.format())


if __name__ == "__main__":
    main()
