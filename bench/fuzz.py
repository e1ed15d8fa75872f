"""Long fuzzing run of the decoder and the pipeline: the property of tests/test_fuzz.py, for as long as you like.

Valid frames of every supported link type (built with tests/pcapgen.py), cut, flipped and
spliced by Hypothesis, run in whole batches through ``decode`` and ``Pipeline.process``; every
frame must be accounted for once, every code must index its label table, the flow table's
books must balance, and nothing may raise. ``make test`` runs 200 examples of it; this runs
rounds of ``--chunk`` examples, each round from its own seed, until ``--examples`` are done or
``--seconds`` have passed. On a failure Hypothesis shrinks it to a minimal example, which is
printed (``Falsifying example``) with its traceback, and the exit status is 1.

    python bench/fuzz.py --seconds 600
    python bench/fuzz.py --examples 20000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz import LINKTYPES, FuzzBatch, check_decoded, fuzz_run, run_pipeline  # noqa: E402 - the property under test

from agent import labels  # noqa: E402
from agent.capture.memory import MemorySource  # noqa: E402
from agent.config import Config  # noqa: E402
from agent.stages.decode import decode  # noqa: E402


def run(examples: int, seconds: float, chunk: int, first_seed: int) -> dict[str, object]:
    stats: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    links: Counter[int] = Counter()
    started = time.monotonic()
    done, rounds = 0, 0
    while done < examples and time.monotonic() - started < seconds:
        n = min(chunk, examples - done)
        options = settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))

        @options
        @seed(first_seed + rounds)
        @given(fuzz_run())
        def pipeline_property(run: tuple[Config, list[FuzzBatch]]) -> None:
            config, batches = run
            p = run_pipeline(config, batches)
            stats["examples"] += 1
            stats["batches"] += len(batches)
            stats["frames"] += sum(len(b.frames) for b in batches)
            for b in batches:
                links[b.linktype] += len(b.frames)
            c = p.counters
            stats["processed"] += int(c.processed.sum())
            stats["duplicate"] += int(c.duplicate.sum())
            stats["sampled_out"] += int(c.sampled_out.sum())
            stats["unsupported_link"] += int(c.unsupported_link.sum())
            stats["learned_decoded"] += p.learner.decoded
            stats["learned_malformed"] += p.learner.malformed
            stats["flows_started"] += int(p.flows.started.sum())
            stats["flows_evicted"] += int(p.flows.ended[:, labels.END_EVICTED].sum())
            stats["dedup_evictions"] += p.dedup.evictions
            for (layer, reason), v in zip(labels.DECODE_ERRORS, c.decode_errors[:, 1:].sum(axis=0).tolist()):
                if v:
                    errors[f"{layer}/{reason}"] += v

        @options
        @seed(first_seed + rounds)
        @given(st.sampled_from(LINKTYPES), st.lists(st.binary(max_size=300), min_size=1, max_size=64))
        def noise_property(linktype: int, frames: list[bytes]) -> None:
            raw = MemorySource([(i, f) for i, f in enumerate(frames)], linktype=linktype).read(len(frames), 0.0)
            assert raw is not None
            check_decoded(raw, decode(raw))
            stats["noise_frames"] += len(frames)

        pipeline_property()
        noise_property()
        done += n
        rounds += 1
        elapsed = time.monotonic() - started
        print(f"fuzz: {done:,} examples, {stats['frames']:,} frames, {elapsed:.0f} s", file=sys.stderr, flush=True)
    return {
        "examples": done,
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
        "first_seed": first_seed,
        "stats": dict(stats),
        "frames_by_linktype": {str(k): v for k, v in sorted(links.items())},
        "decode_errors": dict(errors.most_common()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=1_000_000_000, help="stop after this many examples (default: no limit but --seconds)")
    ap.add_argument("--seconds", type=float, default=300.0, help="stop after this long (default 300)")
    ap.add_argument("--chunk", type=int, default=500, help="examples per round, each round from its own seed (default 500)")
    ap.add_argument("--seed", type=int, default=int(time.time()), help="seed of the first round (default: the time); printed for a rerun")
    args = ap.parse_args(argv)
    if args.examples < 1 or args.seconds <= 0 or args.chunk < 1:
        ap.error("--examples, --seconds and --chunk must be positive")
    print(f"fuzz: first seed {args.seed}", file=sys.stderr)
    try:
        summary = run(args.examples, args.seconds, args.chunk, args.seed)
    except Exception:
        traceback.print_exc()
        print(f"fuzz: FAILED (rerun with --seed {args.seed}; the falsifying example is above)", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
