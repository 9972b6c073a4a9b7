"""How fast the CPU reads a weight in the products a streaming step makes, by layout and form.

A streaming step multiplies a few rows (or frames) of activations by each weight; reading the
weight bounds it, and how fast the fp32 matrix product reads it depends on the weight's layout
in memory and the order of the product. This prints GB/s of weight read for Mimi's and the LM's
shapes, for each form the model could use:

    W @ X       weight [out, in] row-major, activations [in, N] column-major: what the model
                uses (`model.cpu.products`, for the CPU forms of linears and convs): Mimi's
                2 rows a step or a conv's few frames; the LM's one row, duplicated (N = 2),
                where MKL's matrix-vector kernel (N = 1) reads at half the speed
    X @ W^T     the same weight, multiplied the other way round (nn.Linear, torch.matmul's fold)
    X @ Wcm     the weight stored [in, out] (column-major for nn.Linear)
    blocks      W @ X with a wide weight read in column blocks (`model.cpu.products.wide_blocks`), what
                the model does for weights with 2048 or more columns without our kernel; "-"
                for the others
    ours        our kernel (`model/cpu/native.py`): each weight row read once, front to back, for
                one or two rows of activations; what the model uses where it is built

    python benchmarks/bench_products.py [--threads N] [--megabytes 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's model/

from model.cpu import native  # noqa: E402
from model.cpu.products import weight_times, wide_blocks  # noqa: E402

SHAPES = [  # (out, in, rows): where the model meets them
    (1536, 512, 2),  # Mimi transformer: attention in-projection, two 25 Hz steps per frame
    (2048, 512, 2),  # Mimi transformer: feed-forward in
    (512, 2048, 2),  # Mimi transformer: feed-forward out
    (1024, 3584, 2),  # Mimi decoder: first conv (512 -> 1024, kernel 7) on 2 frames
    (8192, 1024, 2),  # Mimi decoder: first transposed conv's columns (1024 -> 512 x 16)
    (1024, 8192, 2),  # Mimi encoder: last strided conv (512 -> 1024, kernel 16) on 2 frames
    (768, 256, 1),  # one row: the small LM's depformer in-projection
    (1408, 256, 1),  # one row: the small LM's depformer feed-forward in
    (32000, 512, 1),  # one row: the small LM's text head
    (2048, 512, 1),  # one row
    (4096, 4096, 1),  # one row: Moshi 7B's attention out-projection
]


def best_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--megabytes", type=float, default=200, help="weights per timing (beyond the caches)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"{args.threads} threads, torch {torch.__version__}; GB/s of fp32 weight read, best of 20"
    )
    kernel = native.weight_times_rows()
    print(f"our kernel: {native.status()}")
    print(
        f"{'weight [out, in]':>18} {'rows':>5} {'W @ X':>8} {'X @ W^T':>8} {'X @ Wcm':>8}"
        f" {'blocks':>8} {'ours':>8}"
    )
    for out, inp, rows in SHAPES:
        count = max(1, int(args.megabytes * 1e6 / (out * inp * 4)))
        weights = [torch.randn(out, inp) for _ in range(count)]
        stored_t = [w.t().contiguous() for w in weights]  # [in, out]
        x = torch.randn(rows, inp)
        gb = count * out * inp * 4 / 1e9
        twice = x.expand(max(rows, 2), -1).contiguous()  # W @ X takes one row twice
        forms = [  # (weights, product) per form
            (weights, lambda w, x=twice: torch.mm(w, x.t())),
            (weights, lambda w, x=x: torch.mm(x, w.t())),
            (stored_t, lambda w, x=x: torch.mm(x, w)),
        ]
        with native.turned_off():
            if wide_blocks(weights[0]) is not None:
                cols = x.t()  # [in, rows], column-major
                with_blocks = [(w, wide_blocks(w)) for w in weights]  # copies made beforehand
                forms.append((with_blocks, lambda wb, c=cols: weight_times(wb[0], c, wb[1])))
            else:
                forms.append(None)
            if kernel is not None and rows <= native.MAX_ROWS:
                forms.append((weights, lambda w, x=x: kernel(w, x)))
            cells = []
            for form in forms:
                if form is None:
                    cells.append(f"{'-':>9}")
                    continue
                ws, f = form
                rate = gb / (best_ms(lambda ws=ws, f=f: [f(w) for w in ws]) / 1000)
                cells.append(f"{rate:>9.1f}")
        cells += [f"{'-':>9}"] * (5 - len(cells))
        print(f"{f'[{out}, {inp}]':>18} {rows:>5}" + "".join(cells))


if __name__ == "__main__":
    main()
