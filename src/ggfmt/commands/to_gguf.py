"""``fmt to-gguf``: a checkpoint, an adapter, a 2023 model file, an early GGUF or a CLIP model as
the GGUF current llama.cpp loads."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..convert.outtype import OUTTYPES
from ._common import convert_to_file, output_options, parameter_options, table_options, wrap

DESCRIPTION = (wrap("Convert INPUT to GGUF. A ggcp file becomes a GGUF training checkpoint "
               "and a ggcl file a GGUF finetune checkpoint, which llama.cpp's trainers "
               "resume from (through the schema's mapping table; fmt schema show NAME lists "
               "what it makes). "
               "A ggla adapter, a PEFT adapter directory or an mlx-lm adapter directory "
               "becomes a GGUF LoRA adapter "
               "that current llama.cpp loads and that means the same. A 2023 llama model "
               "file (ggml, ggmf, ggjt), and a 2023 GPT-2, StarCoder, MPT, Replit, GPT-NeoX, Dolly or Falcon file "
               "of the ggml examples or ggllm.cpp, becomes the GGUF model llama.cpp runs, and a GGUF "
               "of version 1 or 2 the same file in version 3. A CLIP model "
               "directory becomes the GGUF of llama.cpp's clip/llava code. Payloads are "
               "copied, or transformed one tensor at a time; never all held in memory. "
               "The output is written next to its final name and renamed into place "
               "once it is on disk."))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="INPUT",
                        help="a ggcp, ggcl or ggla file, a 2023 model file (llama's ggml, ggmf, ggjt; the ggml "
                             "examples' GPT-2, StarCoder, MPT, Replit, GPT-NeoX, Dolly, Falcon), a GGUF of version "
                             "1 or 2, a PEFT or mlx-lm adapter directory or a CLIP model directory")
    output_options(parser, "OUT.gguf", "output file, or a directory (ending in /) to write the default name into "
                                   "(default: INPUT with the suffix .gguf; for a PEFT directory "
                                   "DIR/ggml-adapter-model.gguf; for a CLIP directory "
                                   "DIR/[text-|vision-|mmproj-]model-f16.gguf)")
    parser.add_argument("--outtype", choices=OUTTYPES,
                        help="tensor type of the output's matrices (vectors stay f32; quantized ones stay as they "
                             "are): f32, f16, bf16 or q8_0 for adapters and GGUF models, f32, f16 or q8_0 for 2023 "
                             "model files and --model-only (default: as the source), f32 or f16 for CLIP (default "
                             "f16); training checkpoints keep f32")
    parser.add_argument("--mapping", metavar="NAME", help="mapping table to use (default: <schema>-gguf)")
    parser.add_argument("--base", type=Path, metavar="HF_MODEL_DIR",
                        help="PEFT adapters: the base model's directory; only its config.json is read "
                             "(default: base_model_name_or_path when it is a local directory)")
    parser.add_argument("--arch", metavar="NAME", help="the base model's architecture, where the conversion lets it "
                                                       "be chosen (ggla adapters; default: llama)")
    table_options(parser, "gguf")  # CLIP, 2023 model files, 2023 training checkpoints: as their tables declare
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="set an option the conversion's table declares (repeatable; see the `options:` of its "
                             "mapping table); the flags above are such options under their upstream names")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    parameter_options(parser)


def run(args: argparse.Namespace) -> int:
    return convert_to_file(args, "gguf")
