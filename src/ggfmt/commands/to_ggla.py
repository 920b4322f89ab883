"""``fmt to-ggla``: a PEFT adapter as the 2023 ggla file convert-lora-to-ggml.py wrote."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import convert_to_file, output_options, wrap

DESCRIPTION = (wrap("Write the ggla adapter that convert-lora-to-ggml.py wrote for a Hugging "
               "Face PEFT LoRA adapter directory (adapter_config.json with "
               "adapter_model.safetensors or adapter_model.bin), byte for byte, by "
               "building the ggla schema. Options the format cannot express "
               "(fan_in_fan_out, bias, modules_to_save, a non-integer lora_alpha, ...) "
               "are refused."))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="PEFT_DIR")
    output_options(parser, "OUT", "output file, or a directory (ending in /) to write the default name into "
                              "(default: PEFT_DIR/ggml-adapter-model.bin)")
    parser.add_argument("--outtype", choices=("f32", "f16"),
                        help="tensor type of both factors (default: as convert-lora-to-ggml.py wrote them: lora_A as "
                             "the source, lora_B f32)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary")


def run(args: argparse.Namespace) -> int:
    return convert_to_file(args, "ggla")
