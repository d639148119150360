#!/usr/bin/env python3
"""Writes dequantization test vectors for the native runtime's weight types.

For each GGUF block type the native kernels compute with, four blocks of pseudo-random
bytes (seeded; the f16 scales set to finite values) and their values as dequantized by
the `gguf` Python package (llama.cpp's own reference implementation in numpy), into
enclave/testdata/dequant/<TYPE>.blocks (raw block bytes) and <TYPE>.f32 (little-endian
f32 values). `enclave/src/model/native/kernels` checks its reading of every layout
against these files, independently of its own code.

Usage: python3 bench/reference/dequant_vectors.py   (needs `pip install gguf==0.19.0`)
"""
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = pathlib.Path(__file__).resolve().parents[2] / "enclave" / "testdata" / "dequant"
# (type, offsets of its f16 scales within a block)
TYPES = [
    (T.Q4_0, [0]),
    (T.Q4_1, [0, 2]),
    (T.Q5_0, [0]),
    (T.Q5_1, [0, 2]),
    (T.Q8_0, [0]),
    (T.Q4_K, [0, 2]),
    (T.Q5_K, [0, 2]),
    (T.Q6_K, [208]),
]
BLOCKS = 4


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261203)
    for ty, scale_offsets in TYPES:
        values_per_block, block_bytes = quants.GGML_QUANT_SIZES[ty]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for b in range(BLOCKS):
            for k, at in enumerate(scale_offsets):
                scale = np.float16((0.01 + 0.003 * b) * (1 if k == 0 else -2.5))
                raw[b, at : at + 2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
        values = quants.dequantize(raw.reshape(-1), ty).astype("<f4").reshape(-1)
        assert values.size == BLOCKS * values_per_block
        (OUT / f"{ty.name}.blocks").write_bytes(raw.tobytes())
        (OUT / f"{ty.name}.f32").write_bytes(values.tobytes())
        print(f"{ty.name}: {BLOCKS} blocks of {block_bytes} bytes, {values.size} values")


if __name__ == "__main__":
    main()
