"""``hubroute bench crawl``: a whole Hub month crawled against the local Hub, with the state's write cost.

The local Hub (:class:`~hubroute.testing.hub_server.LocalHub`) serves ``models`` generated repos
(:class:`~hubroute.testing.hub_seed.GeneratedModels`: made on the fly from their index, one month of creation
dates, paginated like the Hub) from this process; the crawl runs in a child process, as a real crawl would,
so the server and the crawler each have their own interpreter. Reported: wall time, models per second, the
bytes the crawl wrote to its state (counted by the state's writer, and checked against the file's size), the
final state size and their ratio, and the README requests the server answered.

With ``kill_at`` (e.g. 0.5), the child is ``SIGKILL``'d once that share of the models is in its state file,
then a second child resumes the crawl to the end; the server's log then gives how many times each card was
fetched: once, or twice for a card that was in flight when the first child died (those are listed, and
checked to be exactly the ones fetched but not yet recorded at the kill).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..testing.hub_seed import GeneratedModels
from ..testing.hub_server import LocalHub
from ..update.crawl import CrawlState, HubCrawler

__all__ = ["CrawlBenchSettings", "run_crawl_bench", "format_crawl_table", "main"]

SINCE = "2026-06-01"
_CARD = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/[^/]+/README\.md$")


@dataclass
class CrawlBenchSettings:
    """What :func:`run_crawl_bench` measures.

    Attributes:
        models: Generated repos served (all created within one month).
        workers: Cards fetched in parallel by the crawler.
        kill_at: Kill the crawl once this share of the models is recorded, then rerun it (``None``: one run).
        workdir: Folder of the hub and the state (default: a temporary one).
        timeout_s: Limit of each crawl process.
    """

    models: int = 100_000
    workers: int = 8
    kill_at: float | None = None
    workdir: str | None = None
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.models < 1:
            raise ValueError("models must be at least 1.")
        if self.kill_at is not None and not 0 < self.kill_at < 1:
            raise ValueError("kill_at must be between 0 and 1 (e.g. 0.5), or None.")


def _count_lines(path: Path, offset: int, count: int) -> tuple[int, int]:
    """Model lines appended to ``path`` since ``offset``: ``(new offset, new count)`` (whole lines only)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset, count
    end = data.rfind(b"\n") + 1
    return offset + end, count + sum(line.startswith(b'{"model":') for line in data[:end].split(b"\n"))


def _child_command(endpoint: str, state: Path, workers: int, result: Path) -> list[str]:
    return [
        sys.executable, "-m", "hubroute.bench.crawl", "--endpoint", endpoint, "--state", str(state),
        "--workers", str(workers), "--result", str(result),
    ]  # fmt: skip


def _card_fetches(hub: LocalHub) -> Counter[str]:
    """Repo id -> README requests answered 200, from the server's log."""
    counts: Counter[str] = Counter()
    for record in list(hub.requests):
        match = _CARD.match(record.path)
        if match and record.method == "GET" and record.status == 200:
            counts[match.group("repo")] += 1
    return counts


def run_crawl_bench(settings: CrawlBenchSettings, show_progress: bool = True) -> dict[str, Any]:
    """Serve ``settings.models`` generated repos, crawl them (killed and rerun with ``kill_at``), measure.

    Args:
        settings: What to measure.
        show_progress: Print a line per phase.

    Returns:
        The results (JSON-ready): settings, wall time, models/s, state bytes written, final size, ratio, card
        requests, per-card fetch counts, and for ``kill_at`` the state at the kill and the refetched cards.

    Raises:
        RuntimeError: a crawl process failed or did not finish in ``settings.timeout_s``.
    """
    root = Path(settings.workdir or tempfile.mkdtemp(prefix="hubroute-bench-crawl-"))
    root.mkdir(parents=True, exist_ok=True)
    state_path = root / "crawl_state.jsonl"
    state_path.unlink(missing_ok=True)
    generated = GeneratedModels(settings.models)
    hub = LocalHub(root / "hub")
    hub.add_generated(generated)
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1"}

    def say(text: str) -> None:
        if show_progress:
            print(text, file=sys.stderr, flush=True)

    runs: list[dict[str, Any]] = []
    kill: dict[str, Any] | None = None
    with hub:
        env["HF_ENDPOINT"] = hub.endpoint
        started = time.perf_counter()
        say(f"Crawling {settings.models} generated models ({settings.workers} workers) from {hub.endpoint}")
        result_file = root / "run-1.json"
        child = subprocess.Popen(
            _child_command(hub.endpoint, state_path, settings.workers, result_file), env=env
        )
        if settings.kill_at is not None:
            target = int(settings.kill_at * settings.models)
            offset = count = 0
            while child.poll() is None and count < target:
                time.sleep(0.02)
                offset, count = _count_lines(state_path, offset, count)
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait()
                killed_size = state_path.stat().st_size
                at_kill = CrawlState.load(state_path)
                recorded = set(at_kill.records) | set(at_kill.skipped) if at_kill else set()
                fetched = _card_fetches(hub)
                in_flight = sorted(set(fetched) - recorded)
                kill = {"recorded": len(recorded), "state_bytes": killed_size, "in_flight": in_flight,
                        "elapsed_s": round(time.perf_counter() - started, 3)}  # fmt: skip
                say(
                    f"Killed the crawl with {len(recorded)} models recorded, {len(in_flight)} cards in flight"
                )
                runs.append({"killed": True, "bytes_written": killed_size, "elapsed_s": kill["elapsed_s"]})
                result_file = root / "run-2.json"
                child = subprocess.Popen(
                    _child_command(hub.endpoint, state_path, settings.workers, result_file), env=env
                )
        try:
            code = child.wait(timeout=settings.timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            raise RuntimeError(f"The crawl did not finish in {settings.timeout_s:.0f} s.") from None
        if code != 0:
            raise RuntimeError(f"The crawl process failed (exit status {code}); see its output above.")
        runs.append(json.loads(result_file.read_text()))
        wall = time.perf_counter() - started
        fetches = _card_fetches(hub)
        listing_pages = hub.count(r"^/api/models$", "GET")
        card_requests = hub.count(r"/resolve/", "GET")

    final = CrawlState.load(state_path)
    assert final is not None
    final_size = state_path.stat().st_size
    written = sum(int(r["bytes_written"]) for r in runs)
    distribution = Counter(fetches[generated.repo_id(i)] for i in range(settings.models))
    twice = sorted(m for m, n in fetches.items() if n > 1)
    results: dict[str, Any] = {
        "settings": asdict(settings),
        "models": settings.models,
        "recorded": len(final.records),
        "skipped": len(final.skipped),
        "failed": len(final.failed),
        "wall_s": round(wall, 3),
        "crawl_s": round(sum(float(r["elapsed_s"]) for r in runs), 3),
        "models_per_s": round(settings.models / wall, 1),
        "state_bytes_written": written,
        "state_final_bytes": final_size,
        "write_ratio": round(written / final_size, 4),
        "card_requests": card_requests,
        "listing_pages": listing_pages,
        "fetches_per_card": {str(k): v for k, v in sorted(distribution.items())},
        "cards_fetched_twice": twice[:50],
        "cards_fetched_twice_count": len(twice),
        "runs": runs,
        "cpu_count": os.cpu_count(),
    }
    if kill is not None:
        results["kill"] = {
            **kill,
            "in_flight": kill["in_flight"][:50],
            "in_flight_count": len(kill["in_flight"]),
        }
        results["refetched_only_in_flight"] = set(twice) <= set(kill["in_flight"])
    return results


def format_crawl_table(results: dict[str, Any]) -> str:
    """A Markdown table of :func:`run_crawl_bench`'s headline numbers."""
    rows = [
        ("models", f"{results['models']:,}"),
        (
            "recorded / skipped / failed",
            f"{results['recorded']:,} / {results['skipped']} / {results['failed']}",
        ),
        ("wall time", f"{results['wall_s']:.1f} s"),
        ("models/s", f"{results['models_per_s']:,.0f}"),
        ("state bytes written", f"{results['state_bytes_written'] / 2**20:,.1f} MiB"),
        ("final state size", f"{results['state_final_bytes'] / 2**20:,.1f} MiB"),
        ("written / final", f"{results['write_ratio']:.3f}"),
        ("README requests", f"{results['card_requests']:,}"),
        ("listing pages", f"{results['listing_pages']:,}"),
        ("fetches per card", ", ".join(f"{k}x: {v:,}" for k, v in results["fetches_per_card"].items())),
    ]
    kill = results.get("kill")
    if kill is not None:
        rows += [
            ("killed at", f"{kill['recorded']:,} recorded, {kill['elapsed_s']:.1f} s"),
            ("cards in flight at the kill", f"{kill['in_flight_count']}"),
            ("cards fetched twice", f"{results['cards_fetched_twice_count']} "
             f"({'all' if results['refetched_only_in_flight'] else 'NOT all'} in flight at the kill)"),
        ]  # fmt: skip
    lines = ["| crawl | value |", "| --- | ---: |"]
    return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])


def main(argv: list[str] | None = None) -> int:
    """The crawl process of the benchmark: crawl ``--endpoint`` into ``--state``, write ``--result``."""
    parser = argparse.ArgumentParser(description="One crawl of hubroute bench crawl (a child process).")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    crawler = HubCrawler(
        SINCE, state_path=args.state, endpoint=args.endpoint, token=False, workers=args.workers,
        show_progress=False,
    )  # fmt: skip
    result = crawler.crawl()
    Path(args.result).write_text(json.dumps({
        "killed": False, "bytes_written": crawler.bytes_written, "elapsed_s": round(result.elapsed_s, 3),
        "new": len(result.new), "resumed": result.resumed, "listed": result.listed,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
