"""Evaluate a saved router on CMRBench, write a readable report, and record the results in its model card.

    python examples/evaluate_router.py --router runs/cmrbench/hugging-bench-2 --bench ../shared/cmrbench \
        --output eval/carve

With the routers that examples/continual_cmrbench.py saves after each experience, pass the earlier ones to
fill the whole accuracy matrix and measure forgetting too:

    python examples/evaluate_router.py --router runs/cmrbench/hugging-bench-2 --bench ../shared/cmrbench \
        --earlier runs/cmrbench/apibench-hf runs/cmrbench/mllm runs/cmrbench/hugging-bench-1 --output eval/carve

``--bench`` may also be a Hub dataset repo published with ``hubroute bench publish``. The command line does the
same in one step: ``hubroute eval --router ... --bench ... --output ...``.
"""

import argparse
from pathlib import Path

from hubroute import HubRouter
from hubroute.bench.cmrbench import EXPERIENCES, load_cmrbench
from hubroute.bench.report import evaluate_router, router_evaluation, write_report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--router", required=True, help="Folder of the router (after the last experience).")
    parser.add_argument("--bench", default="../shared/cmrbench", help="CMRBench folder or Hub dataset repo.")
    parser.add_argument(
        "--earlier", nargs="*", default=[], help="Router folders after each earlier experience."
    )
    parser.add_argument("--output", default="eval", help="Folder for report.md, report.json and the plots.")
    args = parser.parse_args()

    router = HubRouter.from_pretrained(args.router)
    learned = [name for name in EXPERIENCES if name in router.info.get("experiences", [])] or list(
        EXPERIENCES
    )
    bench = load_cmrbench(args.bench, experiences=learned)
    earlier = [HubRouter.from_pretrained(folder) for folder in args.earlier]

    name = Path(args.router).name
    results = evaluate_router(router, bench, name=name, earlier=earlier)
    result = results[name]
    print(
        f"{name}: M-Acc {result['M_acc']:.1f}, F-Acc {result['F_acc']:.1f}, D-Acc {result['D_acc']:.1f}, "
        f"M@5 {result['M_at5']:.1f}"
    )

    files = write_report(
        results,
        args.output,
        title=f"{name} on CMRBench",
        source=args.bench,
        kind="router",
        experiences=bench.names,
        router={
            "name": name,
            "num_models": router.num_models,
            "experiences_learned": router.info.get("experiences", []),
            "coverage": result.pop("coverage"),
        },
    )
    print(f"Report: {files.markdown} ({len(files.plots)} plots)")

    # The model card (README.md) renders router.info["evaluation"] into its model-index.
    router.info["evaluation"] = router_evaluation(result, args.bench, bench.names)
    router.save_pretrained(args.router)
    print(f"Results recorded in {Path(args.router) / 'README.md'}")


if __name__ == "__main__":
    main()
