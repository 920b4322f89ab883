"""Write the fuzzing seed corpus: each fixture prefixed with the byte that selects its schema."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = {0: ["genuine/ggcp-v0-adam.bin", "synth/ggcp-v1-adam-past3.bin", "synth/ggcp-v1-lbfgs.bin"],
         1: ["synth/ggcl-adam-past2.bin", "synth/ggcl-lbfgs-past4.bin"],
         2: ["genuine/ggla-finetune.bin", "peft/ggla.ref.bin"]}

if __name__ == "__main__":
    corpus = Path(sys.argv[1])
    corpus.mkdir(parents=True, exist_ok=True)
    for selector, files in SEEDS.items():
        for name in files:
            data = (ROOT / "fixtures" / name).read_bytes()
            (corpus / Path(name).name).write_bytes(bytes([selector]) + data)
