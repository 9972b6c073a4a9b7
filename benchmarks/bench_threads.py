"""The thread policy on a busy desktop: `talk` on a small random checkpoint, timed alone, beside
busy loops on half the cores, and two copies at once; each with the policy
(`model/cpu/threads.py`: the free cores, followed while running), with OMP_NUM_THREADS=1, and
with every core (`--threads N`, the old default). Prints each wall time and the ratios the goals
are about:

- beside busy loops on half the cores: at most 1.3x the time alone;
- two copies at once: at most 1.8x each;
- under load, never slower than OMP_NUM_THREADS=1.

    python benchmarks/bench_threads.py [--seconds 12.7] [--json]

The checkpoint is `bench --config small`'s (LM dim 512, the full-size Mimi), written once to a
temporary folder; the input is `bench`'s synthetic voice. Each run is a fresh process, as a user
starts one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _talk(folder: Path, source: Path, out: Path, env_extra: dict, extra: list[str]):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | env_extra
    argv = [sys.executable, "-m", "app", "talk", str(source), str(out), "--model", str(folder)]
    argv += ["--device", "cpu", "--greedy", "--trailing-silence", "0", *extra]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _timed(processes) -> list[float]:
    start = time.perf_counter()
    times = []
    for p in processes:
        if p.wait() != 0:
            raise SystemExit("a talk run failed")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import numpy as np
    import soundfile

    from app.commands.bench import SMALL_LM, synthetic_input
    from model.config import FRAME_SIZE
    from model.tiny import TINY_LM, write_random_checkpoint

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="moshi-threads-") as tmp:
        tmp = Path(tmp)
        folder = write_random_checkpoint(tmp / "small", {**TINY_LM, **SMALL_LM}, None)
        frames = int(np.ceil(args.seconds * 24000 / FRAME_SIZE))
        source = tmp / "in.wav"
        soundfile.write(source, synthetic_input(frames).reshape(-1), 24000)

        def run(name, env=None, extra=(), copies=1, busy=0) -> list[float]:
            stop = multiprocessing.Event()
            loops = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(busy)]
            for loop in loops:
                loop.start()
            try:
                time.sleep(0.5 if busy else 0)
                procs = [_talk(folder, source, tmp / f"out{i}.wav", env or {}, list(extra))
                         for i in range(copies)]  # fmt: skip
                times = _timed(procs)
            finally:
                stop.set()
                for loop in loops:
                    loop.join()
            print(f"{name:46} {' '.join(f'{t:6.1f} s' for t in times)}", file=sys.stderr)
            return times

        half = max(1, cores // 2)
        one = {"OMP_NUM_THREADS": "1"}
        every = ["--threads", str(cores)]
        r = {
            "alone": run("alone (policy)")[0],
            "alone_omp1": run("alone, OMP_NUM_THREADS=1", one)[0],
            "alone_all": run(f"alone, --threads {cores}", extra=every)[0],
            "busy": run(f"beside {half} busy loop(s) (policy)", busy=half)[0],
            "busy_omp1": run(f"beside {half} busy loop(s), OMP_NUM_THREADS=1", one, busy=half)[0],
            "busy_all": run(
                f"beside {half} busy loop(s), --threads {cores}", extra=every, busy=half
            )[0],  # fmt: skip
            "two": max(run("two copies at once (policy)", copies=2)),
            "two_all": max(run(f"two copies at once, --threads {cores}", extra=every, copies=2)),
        }
    ratios = {
        "busy / alone": r["busy"] / r["alone"],
        "two copies / alone": r["two"] / r["alone"],
        "busy / busy with OMP_NUM_THREADS=1": r["busy"] / r["busy_omp1"],
        f"busy with --threads {cores} / alone": r["busy_all"] / r["alone"],
        f"two copies with --threads {cores} / alone": r["two_all"] / r["alone"],
    }
    goals = {
        "busy / alone": 1.3,
        "two copies / alone": 1.8,
        "busy / busy with OMP_NUM_THREADS=1": 1.0,
    }
    if args.json:
        print(json.dumps({"seconds": r, "ratios": ratios, "cores": cores}))
        return
    cpu = platform.processor() or platform.machine()
    print(f"\ntalk, {args.seconds} s of input, small random checkpoint, {cores} cores ({cpu}):")
    for name, value in ratios.items():
        goal = goals.get(name)
        met = "" if goal is None else ("met" if value <= goal * 1.02 else "NOT met")
        verdict = f" (goal <= {goal:.1f}: {met})" if goal is not None else ""
        print(f"  {name:42} {value:5.2f}x{verdict}")


if __name__ == "__main__":
    main()
