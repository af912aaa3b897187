"""The arrival of experience 4: a router trained on CMRBench experiences 1-3 meets the Hub's new models.

    python examples/bench_update.py --data ../shared/cmrbench --workdir runs/update-bench \\
        --output results/update_bench.json

1. A router is trained on CMRBench experiences 1-3 (public protocol: train on val) with the default CARvE
   recipe and ``holdout_fraction=0.05`` (a few val prompts per experience kept for the forgetting gate), or
   loaded with ``--router``.
2. A local Hub (``hubroute.testing.hub_server``) is seeded with the models of experiences 3 and 4 as the Hub shows them:
   a card README around ``api_data.description``, metadata, ``createdAt`` from ``created_at``. Nothing else of
   experience 4 is used: its prompts never reach the update.
3. ``update_router(UpdateConfig(..., since="2025-06"))`` crawls the models created since June 2025 (experience 4's new
   models), writes training prompts from their cards, cold-starts them, learns them with replay and anchors,
   and gates on forgetting. A second crawl shows that a rerun adds nothing.
4. On experience 4's eval prompts (never seen): M/F/D-Acc right after the cold start and after the update,
   beside zero-shot retrieval (the untrained encoder over every model card, and BM25) and beside training on
   experience 4's real val prompts (the CARvE recipe: the upper reference). On experiences 1-3's eval
   prompts: accuracy before and after, and forgetting.

Training experiences 1-3 on a CPU takes 10-30 minutes; pass ``--router`` to reuse a trained router.

``--dev`` runs the same steps on a development protocol for tuning the update recipe, which uses no eval
prompt and nothing of experience 4: experience 3's models created since ``--dev-since`` (2025-03: 166 models,
420 val prompts) are held out of the router's training, arrive through the update, and are tested on their
val prompts; forgetting is measured on the training prompts of experiences 1-3.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The local Hub must be the endpoint before huggingface_hub (imported by hubroute) reads HF_ENDPOINT.
PORT = _free_port()
os.environ.update(
    {
        "HF_ENDPOINT": f"http://127.0.0.1:{PORT}",
        "HF_HOME": tempfile.mkdtemp(prefix="hubroute-bench-hf-home-"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    }
)

LEVELS = ("M", "F", "D")
OLD = ("apibench-hf", "mllm", "hugging-bench-1")
NEW = "hugging-bench-2"


def load_training_overrides(path: str | None) -> dict:
    """The CARvEConfig fields of a YAML file (``--config``), overriding the update recipe."""
    import yaml

    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{path} must hold a YAML mapping of CARvEConfig fields.")
    return data


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "cmrbench"), help="CMRBench folder.")
    parser.add_argument(
        "--router", default=None, help="A router trained on experiences 1-3 (else trained here)."
    )
    parser.add_argument("--workdir", default="runs/update-bench", help="Routers, crawl state, experience.")
    parser.add_argument("--output", default="results/update_bench.json", help="JSON results.")
    parser.add_argument("--since", default="2025-06", help="Crawl cutoff.")
    parser.add_argument("--prompts-per-model", type=int, default=8)
    parser.add_argument("--neighbors", type=int, default=8)
    parser.add_argument("--neighbor-weight", type=float, default=0.5)
    parser.add_argument("--max-forgetting", type=float, default=1.0)
    parser.add_argument("--config", default=None, help="YAML overriding the update recipe.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-real-val", action="store_true", help="Skip the training on experience 4's val."
    )
    parser.add_argument(
        "--dev", action="store_true", help="Development protocol (no eval prompt, no experience 4)."
    )
    parser.add_argument("--dev-since", default="2025-03", help="Experience 3's models held out for --dev.")
    return parser.parse_args()


def evaluate(router, test, labels) -> dict[str, float]:
    from hubroute.evaluation.metrics import score_predictions
    from hubroute.evaluation.ranking import router_ranker

    predicted = router_ranker(router)(test["prompt"])
    scores = score_predictions(predicted, test["model_id"], test["domain"], labels)
    return {k: round(v, 2) for k, v in scores.items()}


def evaluate_bm25(registry, test, labels) -> dict[str, float]:
    from hubroute.bench.baselines import BM25Index
    from hubroute.evaluation.metrics import score_predictions

    index = BM25Index([r.document() for r in registry])
    predicted = [
        [registry[i].model_id for i in row] for row in index.search(list(test["prompt"]), 5).tolist()
    ]
    return {
        k: round(v, 2)
        for k, v in score_predictions(predicted, test["model_id"], test["domain"], labels).items()
    }


def protocol(args: argparse.Namespace, bench):
    """``(old training sets, old test sets, new test set, Hub models, since)`` of the public or dev protocol."""
    from hubroute.testing.hub_seed import cmrbench_models
    from hubroute.update.crawl import parse_since

    if not args.dev:
        trains = {name: bench[name].train for name in OLD}
        tests = {name: bench[name].test for name in OLD}
        return trains, tests, bench[NEW].test, cmrbench_models(args.data, [NEW, OLD[-1]]), args.since
    cutoff_ms = parse_since(args.dev_since).timestamp() * 1000
    last = bench[OLD[-1]].train
    arrived = [
        i for i, created in enumerate(last["created_at"]) if created is not None and created >= cutoff_ms
    ]
    kept = sorted(set(range(len(last))) - set(arrived))
    trains = {**{name: bench[name].train for name in OLD[:-1]}, OLD[-1]: last.select(kept)}
    models = cmrbench_models(args.data, [OLD[-1]], splits=("val",))
    return trains, dict(trains), last.select(arrived), models, args.dev_since


def train_old_router(trains: dict, folder: Path, seed: int):
    from hubroute import CARvEConfig, CARvETrainer, HubRouter

    router = HubRouter()
    config = CARvEConfig(
        output_dir=str(folder.parent / "trainer"), holdout_fraction=0.05, seed=seed, disable_tqdm=True
    )
    for name, train in trains.items():
        started = time.perf_counter()
        CARvETrainer(model=router, args=config, train_dataset=train, experience=name).train()
        print(
            f"trained {name} in {time.perf_counter() - started:.0f} s: {router.num_models} models", flush=True
        )
    router.save_pretrained(folder)
    return router


def main() -> None:
    args = parse_args()
    from hubroute import CARvEConfig, CARvETrainer, HubRouter
    from hubroute._utils.io import write_json
    from hubroute.bench.baselines import zero_shot_router
    from hubroute.bench.cmrbench import load_cmrbench
    from hubroute.evaluation.metrics import LabelMaps
    from hubroute.testing.hub_seed import seed_hub
    from hubroute.testing.hub_server import LocalHub
    from hubroute.training.data import records_from_rows
    from hubroute.update.crawl import HubCrawler
    from hubroute.update.pipeline import UpdateConfig, update_router

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bench = load_cmrbench(args.data)
    labels = LabelMaps.from_bench(bench)
    trains, old_tests, test_new, hub_models, since = protocol(args, bench)
    results: dict = {"protocol": "dev" if args.dev else "public", "since": since, "seed": args.seed}
    times: dict[str, float] = {}

    # 1. the router of experiences 1-3
    started = time.perf_counter()
    if args.router:
        old_dir = Path(args.router)
        old = HubRouter.from_pretrained(old_dir)
    else:
        old_dir = workdir / "router-e1-e3"
        old = train_old_router(trains, old_dir, args.seed)
    times["old_router_s"] = time.perf_counter() - started
    results["old_router"] = {
        "path": str(old_dir),
        "models": old.num_models,
        "experiences": old.info.get("experiences"),
    }

    # 2. the local Hub: experiences 3 and 4's models, cards only
    hub_root = Path(tempfile.mkdtemp(prefix="hubroute-bench-hub-"))
    hub = LocalHub(hub_root, port=PORT).start()
    try:
        started = time.perf_counter()
        report = seed_hub(hub, hub_models)
        times["seed_hub_s"] = time.perf_counter() - started
        results["hub"] = {"repos": len(report.models)}
        print(f"local Hub at {hub.endpoint}: {len(report.models)} model repos", flush=True)

        # 3. the update
        updated_dir = workdir / "router-e1-e3-updated"
        if updated_dir.exists():
            shutil.rmtree(updated_dir)
        shutil.rmtree(workdir / "router-e1-e3-updated.update", ignore_errors=True)
        config = UpdateConfig(
            router=str(old_dir), since=since, output=str(updated_dir), seed=args.seed,
            prompts_per_model=args.prompts_per_model, neighbors=args.neighbors, neighbor_weight=args.neighbor_weight,
            training=load_training_overrides(args.config), max_forgetting=args.max_forgetting,
            experience_name=f"update-{since}",
        )  # fmt: skip
        summary = update_router(config, keep_cold_router=True)
        print(summary.format(), flush=True)
        results["update"] = summary.to_dict()
        started = time.perf_counter()
        rerun = HubCrawler(since, state_path=updated_dir.with_name(f"{updated_dir.name}.update") / "crawl_state.jsonl",
                           show_progress=False).crawl()  # fmt: skip
        results["rerun"] = {"new": len(rerun.new), "records": len(rerun.records), "elapsed_s": time.perf_counter() - started,
                            "message": rerun.describe()}  # fmt: skip
        print(rerun.describe(), flush=True)
    finally:
        hub.stop()
        shutil.rmtree(hub_root, ignore_errors=True)

    # 4. evaluation
    updated, cold = summary.router, summary.cold_router
    covered = sum(m in updated.registry for m in test_new["model_id"])
    results["new_gold_in_registry_percent"] = round(100 * covered / len(test_new), 2)
    rows: dict[str, dict] = {}
    all_records = [
        r
        for train in (*trains.values(), test_new if args.dev else bench[NEW].train)
        for r in records_from_rows(train)
    ]
    started = time.perf_counter()
    zero = zero_shot_router(all_records)
    rows["zero-shot retrieval (MiniLM, cards)"] = {"new": evaluate(zero, test_new, labels)}
    rows["BM25 (cards)"] = {"new": evaluate_bm25(zero.registry, test_new, labels)}
    del zero
    rows["E1-3 router (before)"] = {"new": evaluate(old, test_new, labels)}
    rows["cold start (cards + neighbours)"] = {"new": evaluate(cold, test_new, labels)}
    rows["after update (crawled cards)"] = {"new": evaluate(updated, test_new, labels)}
    for name, router in (("E1-3 router (before)", old), ("cold start (cards + neighbours)", cold),
                         ("after update (crawled cards)", updated)):  # fmt: skip
        rows[name]["old"] = {e: evaluate(router, test, labels) for e, test in old_tests.items()}
    times["eval_s"] = time.perf_counter() - started
    if not (args.skip_real_val or args.dev):
        started = time.perf_counter()
        real = copy.deepcopy(old)
        config = CARvEConfig(output_dir=str(workdir / "trainer-e4"), seed=args.seed, disable_tqdm=True)
        CARvETrainer(model=real, args=config, train_dataset=bench[NEW].train, experience=NEW).train()
        times["real_val_train_s"] = time.perf_counter() - started
        rows["trained on E4's real val prompts"] = {
            "new": evaluate(real, test_new, labels),
            "old": {e: evaluate(real, test, labels) for e, test in old_tests.items()},
        }
    before = rows["E1-3 router (before)"]["old"]
    for row in rows.values():
        if "old" in row:
            row["forgetting"] = {
                lvl: {e: round(before[e][lvl] - row["old"][e][lvl], 2) for e in OLD} for lvl in LEVELS
            }
            row["forgetting_mean"] = {
                lvl: round(sum(row["forgetting"][lvl].values()) / len(OLD), 2) for lvl in LEVELS
            }
            row["forgetting_max"] = {lvl: max(row["forgetting"][lvl].values()) for lvl in LEVELS}
    results["rows"] = rows
    results["times_s"] = {k: round(v, 1) for k, v in times.items()}
    zero_m = rows["zero-shot retrieval (MiniLM, cards)"]["new"]["M"]
    after = rows["after update (crawled cards)"]
    results["targets"] = {
        "update_M_over_zero_shot": round(after["new"]["M"] / max(zero_m, 1e-9), 2),
        "update_M_at_least_2x_zero_shot": after["new"]["M"] >= 2 * zero_m,
        "forgetting_max_points": after["forgetting_max"],
        "forgetting_within_1_point": all(v <= 1.0 for v in after["forgetting_max"].values()),
        "crawl_s": summary.crawl.get("elapsed_s"),
        "rerun_adds_nothing": results["rerun"]["new"] == 0,
    }
    print_table(results)
    write_json(Path(args.output), json.loads(json.dumps(results, default=str)))
    print(f"\nWrote {args.output}")


def print_table(results: dict) -> None:
    new = "E4" if results["protocol"] == "public" else "arrivals"
    print(
        f"\n| method | {new} M-Acc | {new} F-Acc | {new} D-Acc | {new} M@5 | E1-3 M-Fgt | E1-3 F-Fgt | E1-3 D-Fgt |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, row in results["rows"].items():
        new = row["new"]
        fgt = row.get("forgetting_mean")
        cells = [f"{new[k]:.1f}" for k in ("M", "F", "D", "M_at5")]
        cells += [f"{fgt[k]:.1f}" for k in LEVELS] if fgt and name != "E1-3 router (before)" else ["-"] * 3
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nTargets: {json.dumps(results['targets'])}")


if __name__ == "__main__":
    main()
