"""How far fp32 ONNX Runtime can get ahead of torch on batches: both runtimes' matrix-multiply speed on this CPU.

A batched encoder pass is matrix products over every token, so its speed is bounded by how many fp32
floating-point operations per second (GFLOP/s) the CPU's matrix multiply reaches. This script measures, at one
thread (or ``--threads``):

1. one ``MatMul`` of each of the encoder's weight shapes (2,048 token rows), on torch and on ONNX Runtime:
   the fp32 ceiling of each runtime on this CPU;
2. the encoder itself, on the CMRBench prompts cut into hubroute's length chunks (batches of 64), on torch
   and on the ``onnx`` backend's graph: prompts/s and the GFLOP/s that is (the FLOPs of the encoder's matrix
   products on the padded tokens of each chunk), timed call by call in one loop, the order alternating;
3. what a batched speed-up of ``--target`` x over torch would need: ``target`` x torch's GFLOP/s, against the
   best ceiling of step 1.

It prints a table and writes JSON; about a minute on 2 CPU cores (run it under the bench lock on a shared
machine):

    python examples/fp32_ceiling.py --data ../shared/cmrbench --output results/fp32-ceiling.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from hubroute import HubRouter
from hubroute.bench.process import peak_rss_mb
from hubroute.bench.speed import cmrbench_prompts
from hubroute.routing.encoder import length_chunks


def best_of(call: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_ceiling(rows: int, inner: int, outer: int, threads: int) -> dict[str, float]:
    """GFLOP/s of ``[rows, inner] @ [inner, outer]`` in fp32 on torch and on ONNX Runtime."""
    a, b = torch.randn(rows, inner), torch.randn(inner, outer)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "matmul",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [rows, inner])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [rows, outer])],
        [numpy_helper.from_array(b.numpy(), "B")],
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"A": a.numpy()}
    flops = 2 * rows * inner * outer
    return {
        "torch_gflops": flops / best_of(lambda: a @ b) / 1e9,
        "onnx_gflops": flops / best_of(lambda: session.run(None, feed)) / 1e9,
    }


def encoder_flops(config: Any, batch: int, length: int) -> float:
    """FLOPs of a BERT encoder's matrix products on ``batch`` x ``length`` tokens (attention included)."""
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * batch * length * (4 * hidden * hidden + 2 * hidden * inner)
    attention = 2 * 2 * batch * length * length * hidden
    return float(layers * (dense + attention))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CMRBench folder (or Hub dataset repo)")
    parser.add_argument("--prompts", type=int, default=512, help="eval prompts timed (a seeded sample)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the prompts")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--target", type=float, default=1.8, help="the batched speed-up to test against")
    parser.add_argument("--output", default="results/fp32-ceiling.json")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)

    router = HubRouter()  # the bundled MiniLM
    router.eval()
    encoder = router.encoder
    config = encoder.model[0].auto_model.config
    shapes = {
        "attention projections": (2048, config.hidden_size, config.hidden_size),
        "feed-forward in": (2048, config.hidden_size, config.intermediate_size),
        "feed-forward out": (2048, config.intermediate_size, config.hidden_size),
    }
    ceilings = {name: matmul_ceiling(*shape, args.threads) for name, shape in shapes.items()}

    prompts = cmrbench_prompts(args.data)
    prompts = [prompts[i] for i in np.random.default_rng(0).permutation(len(prompts))[: args.prompts]]
    features = encoder.tokenize(prompts)
    lengths = features["attention_mask"].sum(1).tolist()
    chunks = length_chunks(lengths, 64, 16)
    batches = [encoder.tokenize([prompts[i] for i in rows]) for rows in chunks]
    flops = sum(encoder_flops(config, *b["input_ids"].shape) for b in batches)

    with tempfile.TemporaryDirectory() as cache:
        router.set_backend("onnx", cache_dir=cache)
        onnx_runtime = encoder.runtime
        router.set_backend("torch")
        torch_runtime = encoder.runtime
        calls = {"torch": torch_runtime, "onnx": onnx_runtime}
        for call in calls.values():
            call(batches[0])
        seconds = {name: 0.0 for name in calls}
        for round_ in range(args.rounds):
            for n, batch in enumerate(batches):
                for name in list(calls) if (n + round_) % 2 == 0 else list(calls)[::-1]:
                    start = time.perf_counter()
                    calls[name](batch)
                    seconds[name] += time.perf_counter() - start

    encoder_rows = {
        name: {
            "prompts_per_s": args.rounds * len(prompts) / s,
            "gflops": args.rounds * flops / s / 1e9,
        }
        for name, s in seconds.items()
    }
    best = max(max(c.values()) for c in ceilings.values())
    needed = args.target * encoder_rows["torch"]["gflops"]
    results = {
        "threads": args.threads,
        "prompts": len(prompts),
        "mean_tokens": float(np.mean(lengths)),
        "padded_over_real_tokens": sum(b["input_ids"].numel() for b in batches) / sum(lengths),
        "matmul": ceilings,
        "encoder": encoder_rows,
        "onnx_over_torch": encoder_rows["onnx"]["prompts_per_s"] / encoder_rows["torch"]["prompts_per_s"],
        "best_matmul_gflops": best,
        "target": args.target,
        "needed_gflops": needed,
        "target_within_ceiling": needed <= best,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """The measurements in Markdown, then the verdict, wall time and peak memory."""
    lines = [
        f"| fp32, {results['threads']} thread(s) | torch GFLOP/s | ONNX Runtime GFLOP/s |",
        "| --- | ---: | ---: |",
    ]
    for name, row in results["matmul"].items():
        lines.append(f"| MatMul, {name} | {row['torch_gflops']:.1f} | {row['onnx_gflops']:.1f} |")
    torch_row, onnx_row = results["encoder"]["torch"], results["encoder"]["onnx"]
    lines.append(
        f"| encoder, length chunks of CMRBench prompts | {torch_row['gflops']:.1f} | {onnx_row['gflops']:.1f} |"
    )
    lines += [
        "",
        f"encoder: torch {torch_row['prompts_per_s']:.1f} prompts/s, onnx {onnx_row['prompts_per_s']:.1f} "
        f"({results['onnx_over_torch']:.3f} x); {results['prompts']} prompts, {results['mean_tokens']:.1f} tokens "
        f"on average, padded / real tokens {results['padded_over_real_tokens']:.3f}",
        f"{results['target']} x torch's batched speed needs {results['needed_gflops']:.1f} GFLOP/s; the best "
        f"fp32 MatMul here ran at {results['best_matmul_gflops']:.1f}: "
        + ("within reach" if results["target_within_ceiling"] else "above this CPU's fp32 ceiling"),
        f"wall time {results['wall_s']:.0f} s; peak RSS (VmHWM) {results['peak_rss_mb']:.0f} MB",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
