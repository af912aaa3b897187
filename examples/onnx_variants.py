"""What makes the ONNX encoder fast, and what int8 costs: every variant behind docs/benchmarks/onnx.md.

On CMRBench prompts, at one thread, each table's variants are timed call by call in one loop (their order
alternating), so load from other processes hits them alike:

1. fp32 graphs and session options (the graph hubroute exports; ONNX Runtime's optimisation levels; a graph
   fused for BERT by ``onnxruntime.transformers.optimizer``; the memory pattern and arena; IO binding), all
   with the same chunks, against torch.
2. How a batch is cut into forward passes: main's chunks (lengths estimated from characters, up to twice the
   shortest) against exact token counts with a per-call cost of 0 to 256 tokens (``length_chunks``), on torch
   and on ONNX Runtime.
3. int8 recipes (dynamic per tensor or per channel, with or without the embeddings, ``reduce_range``, the
   FFN output kept fp32; static QDQ calibrated on CMRBench val prompts; blockwise 8-bit ``MatMulNBits``): their
   vectors' cosine to fp32's, the share of prompts whose top-5 models (by the router's cosine) are identical,
   the same set, or share the top-1, and their speed against fp32.

Takes about 10 minutes on 2 CPU cores (run it under the bench lock on a shared machine):

    python examples/onnx_variants.py --data ../shared/cmrbench --router routers/cmr-cards \
        --output results/onnx-variants.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from onnxruntime.capi._pybind_state import quantize_matmul_8bits
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from hubroute import HubRouter
from hubroute.bench.cmrbench import load_cmrbench
from hubroute.bench.process import peak_rss_mb
from hubroute.bench.speed import cmrbench_prompts
from hubroute.routing.encoder import length_chunks
from hubroute.routing.runtime import GRAPH_FILE

Forward = Callable[[dict[str, Any]], np.ndarray]


def session(path: str | bytes, **options: Any) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
    for name, value in options.items():
        setattr(opts, name, value)
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession) -> Forward:
    names = [i.name for i in sess.get_inputs()]
    return lambda features: sess.run(None, {n: features[n].numpy() for n in names})[0]


def bound(sess: ort.InferenceSession, dim: int) -> Forward:
    """The same with IO binding: inputs bound in place, the output written into a preallocated array."""
    names = [i.name for i in sess.get_inputs()]
    output = sess.get_outputs()[0].name

    def forward(features: dict[str, Any]) -> np.ndarray:
        binding = sess.io_binding()
        for n in names:
            binding.bind_cpu_input(n, np.ascontiguousarray(features[n].numpy()))
        out = np.empty((features[names[0]].shape[0], dim), dtype=np.float32)
        binding.bind_output(output, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        sess.run_with_iobinding(binding)
        return out

    return forward


def main_chunks(texts: list[str], batch_size: int, max_length: int) -> list[list[int]]:
    """hubroute main's chunks before this study (6b4f9ae): lengths estimated as characters / 4, a chunk takes
    texts up to twice (plus 8) its shortest's estimate, at most 4,096 estimated tokens."""
    lengths = [min(max_length, len(t) // 4 + 2) for t in texts]
    chunks: list[list[int]] = []
    for i in sorted(range(len(texts)), key=lengths.__getitem__):
        chunk = chunks[-1] if chunks else None
        if (
            chunk is None
            or len(chunk) >= batch_size
            or lengths[i] > 2 * lengths[chunk[0]] + 8
            or (len(chunk) + 1) * lengths[i] > 4096
        ):
            chunks.append([i])
        else:
            chunk.append(i)
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CMRBench folder")
    parser.add_argument("--router", required=True, help="a router folder (its encoder and model embeddings)")
    parser.add_argument("--batches", type=int, default=10, help="batches of 64 eval prompts timed per table")
    parser.add_argument("--accuracy-prompts", type=int, default=600, help="val prompts for the int8 checks")
    parser.add_argument("--output", default="results/onnx-variants.json")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.ERROR)  # the quantisers' tips
    work = Path(tempfile.mkdtemp(prefix="onnx-variants-"))

    eval_prompts = cmrbench_prompts(args.data)
    eval_prompts = [eval_prompts[i] for i in np.random.default_rng(0).permutation(len(eval_prompts))]
    val = [p for e in load_cmrbench(args.data) for p in e.train["prompt"]]
    val = [val[i] for i in np.random.default_rng(1).permutation(len(val))]
    checked, calibration = (
        val[: args.accuracy_prompts],
        val[args.accuracy_prompts : args.accuracy_prompts + 256],
    )
    batches = [eval_prompts[i * 64 : (i + 1) * 64] for i in range(args.batches)]

    router = HubRouter.from_pretrained(args.router)
    router.eval()
    encoder = router.encoder
    router.set_backend("onnx", cache_dir=work / "cache")
    graph = encoder.runtime.graph
    assert graph is not None
    fp32 = str(graph.folder / GRAPH_FILE)
    router.set_backend("torch")

    def torch_forward(features: dict[str, Any]) -> np.ndarray:
        with torch.inference_mode():
            return encoder(features).float().numpy()

    def encode(forward: Forward, texts: list[str], call_tokens: int | None = 16) -> np.ndarray:
        """Encode in chunks: exact token counts and ``call_tokens`` (``None``: main's chunks)."""
        if call_tokens is None:
            chunks = main_chunks(texts, 64, encoder.config.max_length)
        else:
            lengths = encoder.tokenize(texts)["attention_mask"].sum(1).tolist()
            chunks = length_chunks(lengths, 64, call_tokens)
        out = np.empty((len(texts), encoder.dim), dtype=np.float32)
        for rows in chunks:
            out[rows] = forward(encoder.tokenize([texts[i] for i in rows]))
        return out

    def timed(calls: dict[str, Callable[[list[str]], Any]], reference: str) -> dict[str, dict[str, float]]:
        for call in calls.values():
            call(batches[0])
        times: dict[str, list[float]] = {name: [] for name in calls}
        for n, batch in enumerate(batches):
            for name in list(calls) if n % 2 == 0 else list(calls)[::-1]:
                start = time.perf_counter()
                calls[name](batch)
                times[name].append(time.perf_counter() - start)
        ref = np.asarray(times[reference])
        return {
            name: {
                "ms_per_prompt": float(np.median(t) * 1e3 / 64),
                f"speed_over_{reference}": float(np.median(ref) / np.median(t)),
                f"speed_over_{reference}_paired": float(np.median(ref / np.asarray(t))),
            }
            for name, t in times.items()
        }

    # 1. fp32 graphs and session options -------------------------------------------------------------------
    module, example = encoder.graph_source().build()
    module = copy.deepcopy(module)  # eager attention: the form the BERT fusion recognises
    module.model[0].auto_model.set_attn_implementation("eager")
    names = list(example)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["output"] = {0: "batch"}
    eager = str(work / "eager.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(example[n] for n in names), eager, dynamo=False, input_names=names,
            output_names=["output"], dynamic_axes=axes, opset_version=17, do_constant_folding=True,
        )  # fmt: skip
    from onnxruntime.transformers.optimizer import optimize_model

    config = encoder.model[0].auto_model.config
    fused_model = optimize_model(
        eager,
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    fused_ops = {k: v for k, v in fused_model.get_fused_operator_statistics().items() if v}
    fused = str(work / "fused.onnx")
    fused_model.save_model_to_file(fused)
    level = ort.GraphOptimizationLevel
    fp32_forwards: dict[str, Forward] = {
        "onnx (hubroute's: ORT_ENABLE_ALL)": run(session(fp32)),
        "onnx, ORT_ENABLE_BASIC": run(session(fp32, graph_optimization_level=level.ORT_ENABLE_BASIC)),
        "onnx, no memory pattern": run(session(fp32, enable_mem_pattern=False)),
        "onnx, no CPU memory arena": run(session(fp32, enable_cpu_mem_arena=False)),
        "onnx, IO binding": bound(session(fp32), encoder.dim),
        f"onnx, BERT-fused graph ({', '.join(f'{k} {v}' for k, v in fused_ops.items())})": run(
            session(fused)
        ),
    }
    reference = encode(torch_forward, checked[:200])
    fp32_cosine = {}
    for name, forward in fp32_forwards.items():
        got = encode(forward, checked[:200])
        fp32_cosine[name] = float(np.min(np.sum(normed(got) * normed(reference), axis=1)))
    calls = {"torch": lambda b: encode(torch_forward, b, 64)}
    calls.update({name: (lambda b, f=f: encode(f, b, 16)) for name, f in fp32_forwards.items()})
    results: dict[str, Any] = {"fp32": timed(calls, "torch"), "fp32_min_cosine_to_torch": fp32_cosine}

    # 2. chunking ---------------------------------------------------------------------------------------------
    onnx_forward = fp32_forwards["onnx (hubroute's: ORT_ENABLE_ALL)"]
    chunking: dict[str, Callable[[list[str]], Any]] = {}
    for runtime, forward in (("torch", torch_forward), ("onnx", onnx_forward)):
        chunking[f"{runtime}, main's chunks"] = lambda b, f=forward: encode(f, b, None)
        for call_tokens in (0, 16, 64, 256):
            chunking[f"{runtime}, exact lengths, call_tokens={call_tokens}"] = (
                lambda b, f=forward, c=call_tokens: encode(f, b, c)
            )
    padded = {}
    for name, call_tokens in (("main's chunks", None), *((f"call_tokens={c}", c) for c in (0, 16, 64, 256))):
        real = total = 0
        for batch in batches:
            mask = encoder.tokenize(batch)["attention_mask"]
            lengths = mask.sum(1).tolist()
            chunks = (
                main_chunks(batch, 64, encoder.config.max_length)
                if call_tokens is None
                else length_chunks(lengths, 64, call_tokens)
            )
            real += sum(lengths)
            total += sum(len(c) * max(lengths[i] for i in c) for c in chunks)
        padded[name] = total / real
    results["chunking"] = timed(chunking, "torch, main's chunks")
    results["padded_over_real_tokens"] = padded

    # 3. int8 ---------------------------------------------------------------------------------------------------
    base = onnx.load(fp32)
    nodes = [n.name for n in base.graph.node]
    ffn_out = [n for n in nodes if n.endswith("output/dense/MatMul") and "attention" not in n]
    recipes: dict[str, Callable[[str], None]] = {
        "dynamic, per tensor, all ops": lambda out: quantize_dynamic(fp32, out, weight_type=QuantType.QInt8),
        "dynamic, per channel, all ops (first version)": lambda out: quantize_dynamic(
            fp32, out, weight_type=QuantType.QInt8, per_channel=True
        ),
        "dynamic, per channel, MatMul only (hubroute's)": lambda out: quantize_dynamic(
            fp32, out, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        ),
        "dynamic, per channel, MatMul only, reduce_range": lambda out: quantize_dynamic(
            fp32,
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            reduce_range=True,
        ),  # fmt: skip
        "dynamic, per channel, MatMul only, FFN output fp32": lambda out: quantize_dynamic(
            fp32,
            out,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=ffn_out,
        ),  # fmt: skip
        "static QDQ, per channel, MinMax (256 val prompts)": lambda out: quantize_static(
            fp32,
            out,
            Calibration(encoder, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            calibrate_method=CalibrationMethod.MinMax,
        ),  # fmt: skip
        "MatMulNBits 8-bit, block 32, accuracy level 4": lambda out: matmul_nbits(fp32, out, 32),
        "MatMulNBits 8-bit, block 128, accuracy level 4": lambda out: matmul_nbits(fp32, out, 128),
    }
    embeddings = router.normalized_embeddings().detach().numpy()

    def top5(pooled: np.ndarray) -> np.ndarray:
        vectors = router.project(torch.from_numpy(pooled)).detach().numpy()
        return np.argsort(-(normed(vectors) @ embeddings.T), axis=1, kind="stable")[:, :5]

    reference = encode(onnx_forward, checked)
    expected = top5(reference)
    int8: dict[str, dict[str, float]] = {}
    int8_calls: dict[str, Callable[[list[str]], Any]] = {"fp32": lambda b: encode(onnx_forward, b)}
    for n, (name, make) in enumerate(recipes.items()):
        path = str(work / f"int8-{n}.onnx")
        start = time.perf_counter()
        make(path)
        forward = run(session(path))
        got = encode(forward, checked)
        ids = top5(got)
        cosine = np.sum(normed(got) * normed(reference), axis=1)
        int8[name] = {
            "quantise_s": time.perf_counter() - start,
            "graph_mb": Path(path).stat().st_size / 1e6,
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
            "top5_identical": float(np.mean(np.all(ids == expected, axis=1))),
            "top5_same_set": float(np.mean([set(a) == set(b) for a, b in zip(ids, expected)])),
            "top1_same": float(np.mean(ids[:, 0] == expected[:, 0])),
        }
        int8_calls[name] = lambda b, f=forward: encode(f, b)
    speed = timed(int8_calls, "fp32")
    for name in int8:
        int8[name].update(speed[name])
    results["int8"] = int8
    results["fp32_graph_mb"] = Path(fp32).stat().st_size / 1e6
    results["wall_s"] = time.perf_counter() - started
    results["peak_rss_mb"] = peak_rss_mb()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(tables(results))


def tables(results: dict[str, Any]) -> str:
    """The three tables in Markdown, then wall time and peak memory."""
    lines = ["| fp32 variant (batches of 64, one thread) | ms per prompt | vs torch (paired) | min cosine to torch |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, row in results["fp32"].items():
        cosine = results["fp32_min_cosine_to_torch"].get(name)
        lines.append(
            f"| {name} | {row['ms_per_prompt']:.2f} | {row['speed_over_torch']:.3f} "
            f"({row['speed_over_torch_paired']:.3f}) | {'' if cosine is None else f'{cosine:.7f}'} |"
        )
    ref = "torch, main's chunks"
    lines += ["", f"| chunks | ms per prompt | vs {ref} (paired) |", "| --- | ---: | ---: |"]
    for name, row in results["chunking"].items():
        lines.append(
            f"| {name} | {row['ms_per_prompt']:.2f} | {row[f'speed_over_{ref}']:.3f} "
            f"({row[f'speed_over_{ref}_paired']:.3f}) |"
        )
    lines += [
        "",
        "padded / real tokens: "
        + ", ".join(f"{k} {v:.2f}" for k, v in results["padded_over_real_tokens"].items()),
    ]
    lines += ["", "| int8 recipe | cosine to fp32, mean / min | top-5 identical | same top-5 set | same top-1 "
              "| ms per prompt | vs fp32 (paired) | graph MB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, row in results["int8"].items():
        lines.append(
            f"| {name} | {row['cosine_mean']:.4f} / {row['cosine_min']:.4f} | {100 * row['top5_identical']:.1f} % "
            f"| {100 * row['top5_same_set']:.1f} % | {100 * row['top1_same']:.1f} % | {row['ms_per_prompt']:.2f} "
            f"| {row['speed_over_fp32']:.3f} ({row['speed_over_fp32_paired']:.3f}) | {row['graph_mb']:.1f} |"
        )
    lines += ["", f"fp32 graph {results['fp32_graph_mb']:.1f} MB; wall time {results['wall_s']:.0f} s; "
              f"peak RSS {results['peak_rss_mb']:.0f} MB"]  # fmt: skip
    return "\n".join(lines)


def normed(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Calibration(CalibrationDataReader):
    """CMRBench val prompts in batches of 16, padded to 64 tokens (the calibrator needs one shape)."""

    def __init__(self, encoder: Any, prompts: list[str]) -> None:
        tokenizer = encoder.model.tokenizer
        self.items = []
        for i in range(0, len(prompts), 16):
            features = tokenizer(
                prompts[i : i + 16], padding="max_length", truncation=True, max_length=64, return_tensors="np"
            )
            self.items.append({k: v.astype(np.int64) for k, v in features.items()})
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.iterator, None)

    def rewind(self) -> None:
        self.iterator = iter(self.items)


def matmul_nbits(source: str, target: str, block: int) -> None:
    """Every MatMul with a 2-D weight as ONNX Runtime's ``MatMulNBits`` (8 bits, symmetric, blocks of
    ``block`` along K; accuracy level 4: activations quantised to int8 per block). Written here because
    ``onnxruntime.quantization.matmul_nbits_quantizer`` needs ``onnx_ir``, which hubroute does not install."""
    model = onnx.load(source)
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes, replaced = [], set()
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        k, n = w.shape
        blocks = -(-k // block)
        w = np.ascontiguousarray(np.pad(w, ((0, blocks * block - k), (0, 0))))
        packed = np.zeros((n, blocks, block), np.uint8)
        scales = np.zeros((n, blocks), np.float32)
        quantize_matmul_8bits(packed, w, scales, np.zeros((n, blocks), np.uint8), block, n, k, True)
        name = weight.name
        graph.initializer.extend(
            [numpy_helper.from_array(packed, f"{name}_q8"), numpy_helper.from_array(scales, f"{name}_scales")]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{name}_q8", f"{name}_scales"],
                list(node.output),
                name=f"{node.name}_q8",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block,
                accuracy_level=4,
            )  # fmt: skip
        )
        replaced.add(name)
    kept = [t for t in graph.initializer if t.name not in replaced]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, target)


if __name__ == "__main__":
    main()
