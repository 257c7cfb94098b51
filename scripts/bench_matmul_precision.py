"""Matrix-multiply speed on this CPU in fp32, in bf16, and in fp32 with oneDNN's bf16 arithmetic
(``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``), at the shapes of a MiniLM step (batch 32 x 64
tokens: 2048 rows by hidden 384 and intermediate 1536) and at the 1024^3 multiply that xdt's CPU peak is measured
with. Says whether this CPU has bf16 instructions (Intel AMX tiles, AVX-512 bf16 dot products), where bf16 can
pay; without them it is far slower.

    python scripts/bench_matmul_precision.py
    python scripts/bench_matmul_precision.py --threads 2 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = {"1024x1024 @ 1024x1024": (1024, 1024, 1024), "2048x384 @ 384x1536 (FFN up)": (2048, 384, 1536),
          "2048x1536 @ 1536x384 (FFN down)": (2048, 1536, 384), "2048x384 @ 384x384 (attention proj.)": (2048, 384, 384)}


def gflops(rows: int, inner: int, cols: int, dtype: torch.dtype, repeats: int, fp32_precision: str = "none") -> float:
    """Median GFLOP/s of ``repeats`` timed multiplies (after two warm-up ones) under one oneDNN precision."""
    torch.backends.mkldnn.matmul.fp32_precision = fp32_precision
    a, b = torch.rand(rows, inner, dtype=dtype), torch.rand(inner, cols, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * rows * inner * cols / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; AMX tiles: "
          f"{torch.cpu._is_amx_tile_supported()}, AVX-512 bf16: {torch.cpu._is_avx512_bf16_supported()}")
    print(f"{'shape':38} {'fp32':>9} {'bf16':>9} {'fp32 via bf16':>14}  GFLOP/s (median)")
    for name, shape in SHAPES.items():
        fp32 = gflops(*shape, torch.float32, args.repeats)
        bf16 = gflops(*shape, torch.bfloat16, args.repeats)
        mixed = gflops(*shape, torch.float32, args.repeats, fp32_precision="bf16")
        print(f"{name:38} {fp32:9.0f} {bf16:9.0f} {mixed:14.0f}  (bf16 {bf16 / fp32:.1f}x, fp32 via bf16 "
              f"{mixed / fp32:.1f}x)")
    torch.backends.mkldnn.matmul.fp32_precision = "none"


if __name__ == "__main__":
    main()
