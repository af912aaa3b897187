"""Learn CMRBench's experiences one after another and save the router after each.

    python examples/continual_cmrbench.py --data ../shared/cmrbench --output runs/cmrbench

After each experience the router is saved to OUTPUT/<experience>, and M-Acc on every test set seen so far
is printed: the accuracy of old experiences shows how much was forgotten.
"""

import argparse

from hubroute import CARvEConfig, CARvETrainer, HubRouter
from hubroute.bench.cmrbench import load_cmrbench


def top1(router: HubRouter, test) -> float:
    results = router.route(list(test["prompt"]))
    return (
        100 * sum(r[0].model_id.lower() == m.lower() for r, m in zip(results, test["model_id"])) / len(test)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="../shared/cmrbench")
    parser.add_argument("--output", default="runs/cmrbench")
    args = parser.parse_args()

    bench = load_cmrbench(args.data)
    router = HubRouter()
    config = CARvEConfig(output_dir=f"{args.output}/trainer")
    for t, experience in enumerate(bench):
        CARvETrainer(
            model=router, args=config, train_dataset=experience.train, experience=experience.name
        ).train()
        router.save_pretrained(f"{args.output}/{experience.name}")
        scores = {e.name: round(top1(router, e.test), 1) for e in bench.experiences[: t + 1]}
        print(f"after {experience.name}: {router.num_models} models, M-Acc {scores}")


if __name__ == "__main__":
    main()
