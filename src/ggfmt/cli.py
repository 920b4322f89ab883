"""The ``fmt`` command line: argument parsing, progress, exit codes. No format knowledge lives here.

Heavy modules are imported inside the commands, so ``fmt --help`` starts fast and never
imports torch.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import signal
import sys
import textwrap
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from . import __version__
from .environment import OPTIONAL_PACKAGES, describe_os_error, environment_error
from .errors import GgfmtError, UsageError
from .outtype import OUTTYPES
from .streams import StdoutFailed
from .text import escape

EXIT_OK, EXIT_BAD_INPUT = 0, 2
EXIT_DIFFERENT = 1  # fmt diff, as diff(1)
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: never taken for "the files differ"
PROGRESS_THRESHOLD = 64 << 20  # payloads smaller than this convert too fast to need a bar

DESCRIPTION = """\
Parse, explain and convert the binary formats around ggml / llama.cpp that current tools
no longer read. Inputs:
  2023 training checkpoints        ggcp (train-text-from-scratch), ggcl (finetune, LoRA)
  2023 LoRA adapters               ggla (finetune --lora-out, convert-lora-to-ggml.py)
  2023 llama model files           ggml, ggmf, ggjt v1-v3, f32/f16 and every quantized type
  GGUF files                       versions 1, 2 and 3: parse, diff, edit; 1 and 2 upgraded to 3
  Hugging Face PEFT LoRA adapters  a directory (adapter_config.json + weights)
  mlx-lm LoRA adapters             a directory (adapter_config.json + adapters.safetensors)
  CLIP image encoders              a Hugging Face directory, with a LLaVA projector or not
  native Gemma checkpoints         {"model_state_dict": ...} with fused qkv_proj
Every layout is a YAML schema (`fmt schema list`); conversions follow mapping tables.
"""

# where a wheel user reads what a clone has in docs/
DOCS = "https://github.com/ggfmt/ggfmt/blob/main/docs"

EPILOG = """\
examples:
  fmt parse chk-lora-00010.bin                 show fields and tensors (schema from the magic)
  fmt parse ckpt.bin --schema ggcp --json      the same as one JSON document
  fmt parse model.gguf --no-tensors            a GGUF's metadata as gguf-dump shows it
  fmt to-gguf ckpt.bin                         write ckpt.gguf next to it
  fmt to-gguf ckpt.bin -o out.gguf --force     replace out.gguf if it exists
  fmt to-gguf ckpt.bin --model-only --vocab-model vocab.gguf   what it trained, as a model llama.cpp runs
  fmt to-gguf lora-ckpt.bin --ff 8640          finetune of a model whose n_ff is not derived
  fmt to-gguf adapter.bin                      2023 ggla adapter -> GGUF adapter current llama.cpp loads
  fmt to-gguf ggml-model-q4_0.bin              2023 GGML/GGMF/GGJT model -> GGUF model llama.cpp runs
  fmt to-gguf old-v1.gguf -o new.gguf          GGUF version 1 or 2 -> version 3
  fmt to-gguf peft-dir --base llama-hf-dir     PEFT adapter -> GGUF adapter (base: config.json only)
  fmt to-gguf mlx-adapter --base llama-hf-dir  mlx-lm LoRA adapter -> GGUF adapter
  fmt to-ggla peft-dir -o adapter.bin          PEFT adapter -> ggla, as convert-lora-to-ggml.py wrote it
  fmt to-gguf clip-dir --llava-projector llava.projector   image encoder for LLaVA (mmproj-model-f16.gguf)
  fmt to-hf gemma-2b.ckpt --size 2B -o gemma-2b-hf         native Gemma checkpoint -> Hugging Face
  fmt diff a.gguf b.gguf                       what differs: keys, tensors, content
  fmt edit model.gguf --set general.name=Mine -o mine.gguf     change keys without copying tensors twice

exit status:
  0  success (fmt diff: the files are equal)
  1  fmt diff: the files differ
  2  bad input or usage: one line on stderr names the file, the field, the byte offset
     and what was expected; no output file is left behind
  70  internal error (a bug in ggfmt): a short message; --debug shows the traceback
  130, 143  interrupted (Ctrl-C) or terminated: no output and no temporary file is left
"""


def _wrap(text: str) -> str:
    """A description as paragraphs of terminal width (the raw formatter keeps line breaks as given)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 88) for p in text.split("\n\n"))


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line: what is wrong, the short usage, where the help is;
    long options only as written in full (``--rename`` is no abbreviation of ``--rename-tensor``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's own signature returns NoReturn
        positionals = " ".join(str(a.metavar or a.dest).upper() if a.metavar is None else str(a.metavar)
                               for a in self._actions if not a.option_strings and a.help != argparse.SUPPRESS
                               and not isinstance(a, argparse._SubParsersAction))
        usage = f"{self.prog} [options] {positionals}".rstrip()
        if any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            usage = f"{self.prog} COMMAND [options]"
        sys.stderr.write(f"fmt: error: {escape(message)} (usage: {usage}; see {self.prog} --help)\n")
        sys.exit(EXIT_BAD_INPUT)


def _parameter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("schema parameters")
    group.add_argument("--schema", metavar="NAME|PATH",
                       help="schema to read FILE with: a name (`fmt schema list`), a YAML file, or a Python "
                            "module exposing a Construct `schema` (default: detected from the magic)")
    group.add_argument("--ff", type=int, metavar="N",
                       help="feed-forward length, for models whose n_ff does not follow from n_mult "
                            "(sets the schema parameter ff)")
    group.add_argument("--opt-type", choices=("adam", "lbfgs"),
                       help="optimizer type of a version-1 optimizer context, instead of deciding it "
                            "from the exact size (sets opt_type)")
    group.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="set any schema parameter (repeatable); integers are read as integers")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fmt", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"ggfmt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    # --debug is accepted after the command too; SUPPRESS keeps a subcommand from resetting it.
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of internal errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("parse", parents=[common],
                            help="show a file's fields and tensors (header only, payloads not read)",
                            description=_wrap("Parse FILE against its schema and show its fields, then every tensor "
                                        "(name, type, shape as ne, absolute offset, bytes) and the totals per type. "
                                        "Tensor payloads are not read. A GGUF file's metadata reads as gguf-dump "
                                        "shows it: `type key = value`, long arrays by their first and last items "
                                        "(--json has them in full). FILE may also be a directory of a layout "
                                        "ggfmt declares (an mlx-lm or PEFT adapter, a CLIP model): its JSON files are "
                                        "shown as "
                                        "fields, its tensors as references.")
                            + "\n\nexamples:\n  fmt parse model.gguf --no-tensors --fields 'tokenizer.*'\n"
                              "  fmt parse model.gguf --json | jq '.fields.metadata[\"general.name\"].value'\n"
                              "  fmt parse ckpt.bin --raw   # the records as the file holds them",
                            formatter_class=_Formatter)
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="print one JSON document (fields and tensors) for scripts, "
                                                         "every value in full")
    p.add_argument("--fields", metavar="PATTERN[,PATTERN...]",
                   help="show only the fields and keys matching these glob patterns ('general.*,llama.*')")
    p.add_argument("--no-tensors", action="store_true", help="leave out the tensor table")
    p.add_argument("--raw", action="store_true",
                   help="show the records as the file holds them (every length, type code and record), "
                        "for format debugging")
    p.add_argument("--base", type=Path, metavar="DIR",
                   help="a directory layout's base model (its config.json), for the fields that come from it")
    _parameter_options(p)
    p.set_defaults(run=cmd_parse)

    p = commands.add_parser("to-gguf", parents=[common], help="convert a checkpoint or an adapter to GGUF",
                            description=_wrap("Convert INPUT to GGUF. A ggcp file becomes a GGUF training checkpoint "
                                        "and a ggcl file a GGUF finetune checkpoint, which llama.cpp's trainers "
                                        "resume from (through the schema's mapping table; fmt schema show NAME lists "
                                        "what it makes). "
                                        "A ggla adapter, a PEFT adapter directory or an mlx-lm adapter directory "
                                        "becomes a GGUF LoRA adapter "
                                        "that current llama.cpp loads and that means the same. A 2023 llama model "
                                        "file (ggml, ggmf, ggjt) becomes the GGUF model llama.cpp runs, and a GGUF "
                                        "of version 1 or 2 the same file in version 3. A CLIP model "
                                        "directory becomes the GGUF of llama.cpp's clip/llava code. Payloads are "
                                        "copied, or transformed one tensor at a time; never all held in memory. "
                                        "The output is written next to its final name and renamed into place "
                                        "once it is on disk."),
                            formatter_class=_Formatter)
    p.add_argument("file", type=Path, metavar="INPUT",
                   help="a ggcp, ggcl or ggla file, a 2023 model file (ggml, ggmf, ggjt), a GGUF of version 1 or 2, "
                        "a PEFT or mlx-lm adapter directory or a CLIP model directory")
    _output_options(p, "OUT.gguf", "output file, or a directory (ending in /) to write the default name into "
                                   "(default: INPUT with the suffix .gguf; for a PEFT directory "
                                   "DIR/ggml-adapter-model.gguf; for a CLIP directory "
                                   "DIR/[text-|vision-|mmproj-]model-f16.gguf)")
    p.add_argument("--outtype", choices=OUTTYPES,
                   help="tensor type of the output's matrices (vectors stay f32; quantized ones stay as they are): "
                        "f32, f16, bf16 or q8_0 for adapters and GGUF models, f32, f16 or q8_0 for 2023 model files "
                        "and --model-only (default: as the source), f32 or f16 for CLIP (default f16); training "
                        "checkpoints keep f32")
    p.add_argument("--mapping", metavar="NAME", help="mapping table to use (default: <schema>-gguf)")
    p.add_argument("--base", type=Path, metavar="HF_MODEL_DIR",
                   help="PEFT adapters: the base model's directory; only its config.json is read "
                        "(default: base_model_name_or_path when it is a local directory)")
    p.add_argument("--arch", metavar="NAME", help="the base model's architecture, where the conversion lets it "
                                                  "be chosen (ggla adapters; default: llama)")
    clip = p.add_argument_group("CLIP models (a directory with config.json, vocab.json, model.safetensors)")
    towers = clip.add_mutually_exclusive_group()
    towers.add_argument("--text-only", action="store_true", help="the text encoder only (text-model-*.gguf)")
    towers.add_argument("--vision-only", action="store_true", help="the image encoder only (vision-model-*.gguf)")
    towers.add_argument("--llava-projector", type=Path, metavar="FILE",
                        help="an image encoder for LLaVA: the last layer dropped, the projector added "
                             "(mmproj-model-*.gguf)")
    clip.add_argument("--use-f32", action="store_true", help=argparse.SUPPRESS)  # the upstream name of --outtype f32
    clip.add_argument("--image-mean", type=float, nargs=3, metavar=("R", "G", "B"),
                      help="instead of preprocessor_config.json's image_mean")
    clip.add_argument("--image-std", type=float, nargs=3, metavar=("R", "G", "B"),
                      help="instead of preprocessor_config.json's image_std")
    legacy = p.add_argument_group("2023 llama model files (ggml, ggmf, ggjt), as convert-llama-ggml-to-gguf.py "
                                  "took them")
    legacy.add_argument("-c", "--context-length", type=int, metavar="N",
                        help="llama.context_length (default 2048; LLaMA 2 is 4096)")
    legacy.add_argument("--gqa", type=int, metavar="N",
                        help="grouped-query attention factor n_head / n_head_kv (default 1; 8 for LLaMA 2 70B)")
    legacy.add_argument("--eps", type=float, metavar="X",
                        help="RMS norm epsilon (default 5e-6; 1e-6 for LLaMA 1 and OpenLLaMA, 1e-5 for LLaMA 2)")
    legacy.add_argument("--name", metavar="TEXT", help="general.name (default: the input's file name)")
    legacy.add_argument("--desc", metavar="TEXT",
                        help="general.description (default: converted from legacy GGJTv3 MOSTLY_Q4_0 format)")
    runnable = p.add_argument_group("what a 2023 training checkpoint trained (ggcp, ggcl)")
    runnable.add_argument("--model-only", action="store_true",
                          help="ggcp: the model alone, a llama model GGUF that llama.cpp runs, as the trainer's "
                               "--model-out wrote it (with --vocab-model; -c sets its context length, default 128)")
    runnable.add_argument("--vocab-model", type=Path, metavar="VOCAB.gguf",
                          help="the GGUF the trainer was given with --vocab-model: its tokenizer keys are copied")
    runnable.add_argument("--adapter-only", action="store_true",
                          help="ggcl: the adapter alone, a GGUF LoRA adapter llama.cpp applies, meaning what the "
                               "finetune's --lora-out meant")
    runnable.add_argument("--lora-alpha", type=float, metavar="A",
                          help="the finetune's --lora-alpha (default: its --lora-r, as the finetune took it)")
    runnable.add_argument("--lora-r", type=int, metavar="R",
                          help="the finetune's --lora-r, by which it scaled every delta (default: the rank of "
                               "attn_q, which --lora-r set unless --rank-wq was given)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="set an option the conversion's table declares (repeatable; see the `options:` of its "
                        "mapping table); the flags above are such options under their upstream names")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    _parameter_options(p)
    p.set_defaults(run=cmd_to_gguf)

    p = commands.add_parser("to-ggla", parents=[common], help="convert a PEFT adapter to a 2023 ggla adapter",
                            description=_wrap("Write the ggla adapter that convert-lora-to-ggml.py wrote for a Hugging "
                                        "Face PEFT LoRA adapter directory (adapter_config.json with "
                                        "adapter_model.safetensors or adapter_model.bin), byte for byte, by "
                                        "building the ggla schema. Options the format cannot express "
                                        "(fan_in_fan_out, bias, modules_to_save, a non-integer lora_alpha, ...) "
                                        "are refused."),
                            formatter_class=_Formatter)
    p.add_argument("file", type=Path, metavar="PEFT_DIR")
    _output_options(p, "OUT", "output file, or a directory (ending in /) to write the default name into "
                              "(default: PEFT_DIR/ggml-adapter-model.bin)")
    p.add_argument("--outtype", choices=("f32", "f16"),
                   help="tensor type of both factors (default: as convert-lora-to-ggml.py wrote them: lora_A as "
                        "the source, lora_B f32)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(run=cmd_to_ggla)

    p = commands.add_parser("to-hf", parents=[common],
                            help="convert a native Gemma checkpoint to a Hugging Face model directory",
                            description="Convert a checkpoint of Google's original Gemma release (a PyTorch pickle\n"
                                        "{\"model_state_dict\": ...}, as gemma_pytorch reads it) into a directory\n"
                                        "that transformers.GemmaForCausalLM.from_pretrained(OUT_DIR) loads:\n"
                                        "model.safetensors and config.json.\n\n"
                                        "Each layer's fused qkv_proj is split into q_proj, k_proj and v_proj (for\n"
                                        "any number of key-value heads), embedder.weight becomes\n"
                                        "model.embed_tokens.weight (lm_head is tied to it) and freqs_cis is\n"
                                        "dropped; every other tensor keeps its name. Give the model's dimensions\n"
                                        "with --size (the released 2B and 7B models) or --config; every tensor's\n"
                                        "shape is checked against them before anything is written. The pickle is\n"
                                        "read only with torch.load(weights_only=True), no model is instantiated,\n"
                                        "and tensors are converted one at a time. OUT_DIR appears complete or not\n"
                                        "at all.\n\n"
                                        "examples:\n"
                                        "  fmt to-hf gemma-2b.ckpt --size 2B -o gemma-2b --tokenizer tokenizer.model\n"
                                        "  fmt to-hf gemma-7b.ckpt --size 7B -o gemma-7b --outtype bf16\n"
                                        "  fmt to-hf tiny.ckpt --config tiny-config.json -o tiny-hf --force",
                            formatter_class=_Formatter)
    p.add_argument("file", type=Path, metavar="GEMMA.ckpt", help="the native checkpoint (a PyTorch pickle)")
    dimensions = p.add_mutually_exclusive_group(required=True)
    dimensions.add_argument("--size", metavar="2B|7B",
                            help="the released model the checkpoint is: the upstream converter's dimensions of "
                                 "Gemma 2B or 7B")
    dimensions.add_argument("--config", type=Path, metavar="CONFIG.json",
                            help="a GemmaConfig config.json giving the dimensions; its other values are kept")
    p.add_argument("-o", "--outfile", "--output", dest="output", type=Path, metavar="OUT_DIR", required=True,
                   help="the directory to write (made next to it, then renamed into place)")
    p.add_argument("--outtype", choices=("f32", "f16", "bf16"),
                   help="dtype of the written weights (default: f32)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help=argparse.SUPPRESS)  # older name
    p.add_argument("--dry-run", action="store_true", help="print what would be written and write nothing")
    p.add_argument("--tokenizer", type=Path, metavar="tokenizer.model",
                   help="also save the Hugging Face tokenizer made from this SentencePiece model "
                        "(needs transformers, sentencepiece and protobuf)")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(run=cmd_to_hf)

    p = commands.add_parser("diff", parents=[common], help="compare two files: keys, tensors, content",
                            description=_wrap("Compare A and B, any two files (or directory layouts) fmt parse reads: "
                                        "keys added, removed or changed, with their types (a GGUF's metadata by "
                                        "key, across versions 1 to 3; other layouts' fields by path), then tensors "
                                        "matched by name, added, removed, or changed in type, shape or content. "
                                        "Content is compared by a SHA-256 of each tensor's bytes, read in pieces. "
                                        "Arrays are summarised by their length and the first index where they "
                                        "differ. Exit status as diff(1): 0 equal, 1 different, 2 trouble.")
                            + "\n\nexamples:\n  fmt diff model.gguf edited.gguf\n"
                              "  fmt diff model-f32.gguf model-f16.gguf --values   # how far f16 moved each tensor",
                            formatter_class=_Formatter)
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--values", action="store_true",
                   help="for float tensors (f32, f16, bf16, f64) of one shape, also the largest absolute and "
                        "relative difference of their values")
    p.add_argument("--json", action="store_true", help="print one JSON document for scripts")
    p.add_argument("-q", "--brief", action="store_true",
                   help="as diff -q: say only whether the files differ (the exit status says it too)")
    p.add_argument("--schema", metavar="NAME|PATH", help="read both files with this schema (default: by magic)")
    p.set_defaults(run=cmd_diff)

    p = commands.add_parser("edit", parents=[common], help="change a GGUF's metadata or tensor names",
                            description=_wrap("Change keys or tensor names of a GGUF file without rewriting its "
                                        "tensor data: with -o the data is cloned (a reflink where the file system "
                                        "shares extents, else copy_file_range); with --in-place only the header is "
                                        "rewritten, when the edited one fits in the room before the tensor data, "
                                        "journaled so that an interrupted edit is undone by the next --in-place "
                                        "edit of the file. An edit locks the file: a second one at the same "
                                        "time is refused. A value is read as --set-type says (u8 ... f64, bool, str, "
                                        "TYPE[] for an array given as JSON); else as the key's present type; "
                                        "else, for a key the GGUF specification names (general.name, "
                                        "llama.context_length, tokenizer.ggml.*, ...), as its standard type; "
                                        "else as what the text reads as: true/false a bool, a whole number a "
                                        "u32 (i64, u64 past it; 010 is ten, 0x10 sixteen), another number an f32 "
                                        "(f64 past its range), anything else a str.")
                            + "\n\nexamples:\n  fmt edit model.gguf --set general.name=Mine -o mine.gguf\n"
                              "  fmt edit model.gguf --set-file tokenizer.chat_template=template.jinja --in-place\n"
                              "  fmt edit model.gguf --set-type my.ids=u32[] --set 'my.ids=[1, 2]' "
                              "--delete general.url -o out.gguf\n"
                              "  fmt edit model.gguf --rename-key general.source.hf_repo=general.source.repo_url "
                              "-o out.gguf",
                            formatter_class=_Formatter)
    p.add_argument("file", type=Path, metavar="IN.gguf")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set or add a key")
    p.add_argument("--set-type", action="append", default=[], metavar="KEY=TYPE",
                   help="the GGUF type of a --set value (default: the key's present type, else its standard "
                        "type, else what the text reads as: see above)")
    p.add_argument("--set-file", action="append", default=[], metavar="KEY=PATH",
                   help="set or add a string key to a file's text (a chat template)")
    p.add_argument("--delete", action="append", default=[], metavar="KEY", help="remove a key")
    p.add_argument("--rename-key", action="append", default=[], metavar="OLD=NEW",
                   help="rename a key (its type, value and place kept)")
    p.add_argument("--rename-tensor", action="append", default=[], metavar="OLD=NEW", help="rename a tensor")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--outfile", "--output", dest="output", metavar="OUT.gguf",
                       help="write the edited file here (a directory, or a name ending in /: IN.gguf's name in it)")
    where.add_argument("--in-place", action="store_true", help="rewrite IN.gguf's header in place")
    p.add_argument("--force", action="store_true", help="replace OUT.gguf if it exists")
    p.add_argument("--dry-run", action="store_true", help="say what would change and write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(run=cmd_edit)

    p = commands.add_parser("schema", parents=[common], help="the schema author's tools: list, show, check",
                            description=_wrap("Tools for the YAML schemas that describe each layout (the language: "
                                              f"{DOCS}/schema-language.md)."),
                            formatter_class=_Formatter)
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True)

    def tool(name: str, summary: str, description: str, run: Callable[[argparse.Namespace], int]) -> Any:
        q = tools.add_parser(name, parents=[common], help=summary, description=_wrap(description),
                             formatter_class=_Formatter)
        q.set_defaults(run=run)
        return q

    q = tool("list", "every schema found, with its magic, origin and conversions",
             "Every schema found among ggfmt's own and in the folders of GGFMT_SCHEMA_PATH (searched first): its "
             "id, the magic it detects, its title, where it comes from, and the conversions its tables make.",
             cmd_schema_list)
    q.add_argument("--json", action="store_true", help="as a JSON list")
    q = tool("show", "a generated reference of one layout (Markdown or JSON)",
             "The reference of one layout, generated from its schema: title, doc, parameters, every field in "
             "order with its type, size and offset where they are static, its conditions and doc; its types; and "
             "what each table that converts it makes of its keys and tensors (ggfmt's documentation has this "
             "command's output for every shipped layout).", cmd_schema_show)
    q.add_argument("name", metavar="NAME|PATH", help="a schema's name (`fmt schema list`) or a YAML file")
    q.add_argument("--json", action="store_true", help="as JSON instead of Markdown")
    q = tool("check", "lint schemas, mapping tables and bundle declarations, file:line:column",
             "Lint schemas, mapping tables and bundle declarations (the directory inputs: a file with "
             "`recognise:`): one line per problem, FILE:LINE:COLUMN: what is wrong; exit 2 when "
             "there is any. It finds what the language's definition refuses (unknown keys, wrong types; "
             f"{DOCS}/ggfmt-schema.json), what the compiler refuses (unknown types, bad expressions), names an "
             "expression uses that nothing defines, fields and types without a doc, a meta.id that is not the "
             "file's name, types no field uses, and a table's from: naming a field the schema lacks. --parse "
             "parses a sample with the (first) schema and plans its conversion.", cmd_schema_check)
    q.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="schema, table or bundle files")
    q.add_argument("--parse", type=Path, metavar="FILE", help="also parse this sample with the first schema")
    q = tool("export-ksy", "a layout as a Kaitai Struct .ksy",
             "Write a layout as a Kaitai Struct .ksy, so that Kaitai's tools (its Web IDE) show a file's bytes "
             "with ggfmt's field names: tensor payloads become byte blocks. A layout that needs what the export "
             "cannot say in Kaitai (imports, parameters, one-of, size prefixes, payloads at an offset, ggfmt's "
             "functions) is refused with the list of what.", cmd_schema_export_ksy)
    q.add_argument("name", metavar="NAME|PATH", help="a schema's name (`fmt schema list`) or a YAML file")
    q.add_argument("-o", "--outfile", "--output", dest="output", metavar="OUT.ksy",
                   help="output file (default: standard output)")
    q.add_argument("--force", action="store_true", help="replace OUT.ksy if it exists")
    p = commands.add_parser("schemas", parents=[common], help="the same as `fmt schema list`",
                            description=_wrap("The same as `fmt schema list`."), formatter_class=_Formatter)
    p.add_argument("--json", action="store_true", help="as a JSON list")
    p.set_defaults(run=cmd_schema_list)
    return parser


def _output_options(parser: argparse.ArgumentParser, metavar: str, help_text: str) -> None:
    # llama.cpp's converters call it --outfile; -o and --output are ggfmt's older names.
    parser.add_argument("-o", "--outfile", "--output", dest="output", metavar=metavar, help=help_text)
    parser.add_argument("--force", action="store_true", help=f"replace {metavar} if it exists (a regular file)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be written (keys, tensor names, types, shapes, bytes) and write "
                             "nothing")


def output_path(given: str | None, default: Path | Callable[[], Path]) -> Path:
    """-o as llama.cpp takes it: a file, or a directory (an existing one, or any name ending in /)
    to write the default file name into. ``default`` may be computed only when it is needed."""
    if given is None:
        return default() if callable(default) else default
    if given.endswith(("/", os.sep)) or Path(given).is_dir():
        directory = Path(given)
        if not directory.is_dir():
            raise UsageError(f"{given}: no such directory (a name ending in / means a directory to write into)")
        return directory / (default() if callable(default) else default).name
    return Path(given)


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    from .engine import TextValue

    params: dict[str, Any] = {}
    if not hasattr(args, "set"):
        return params  # a command without schema parameters (to-ggla)
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--set {item!r}: expected NAME=VALUE")
        params[name] = TextValue(text)  # read by the parameter's declared type once the schema is known
    if args.ff is not None:
        if args.ff <= 0:
            raise UsageError(f"--ff {args.ff}: must be a positive integer")
        params["ff"] = args.ff
    if args.opt_type is not None:
        params["opt_type"] = args.opt_type
    return params


def cmd_parse(args: argparse.Namespace) -> int:
    from .engine import parse
    from .report import render

    if args.file.is_dir():
        doc = _parse_directory(args)
    else:
        if args.base is not None:
            raise UsageError("--base applies to a directory (a PEFT or mlx-lm adapter), not to a file")
        doc = parse(args.file, args.schema, _parameters(args))
    patterns = [p for p in args.fields.split(",") if p] if args.fields is not None else None
    # Made whole before any of it is written: a value found bad while it is shown (text that is not
    # UTF-8 in a vocabulary read in bulk) leaves no partial report behind its error.
    text = io.StringIO()
    if args.json and args.raw:
        if patterns is not None or args.no_tensors:
            raise UsageError("--raw --json writes the whole document; --fields and --no-tensors select from the "
                             "default view")
        doc.write_json(text)
    elif args.json:
        doc.write_view_json(text, patterns, tensors=not args.no_tensors)
    else:
        lines = render(doc, raw=args.raw, fields=patterns, tensors=not args.no_tensors)
        while batch := list(itertools.islice(lines, 4096)):  # (a write per line: a tenth of a million-line report)
            text.write("\n".join(batch))
            text.write("\n")
    sys.stdout.write(text.getvalue())
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from .diff import compare, source_label
    from .diff_report import as_json, render
    from .engine import parse

    docs = []
    for path in (args.a, args.b):
        if path.is_dir():
            docs.append(_read_directory(path, None, args.schema, {}))
        else:
            docs.append(parse(path, args.schema))
    comparison = compare(docs[0], docs[1], values=args.values)
    args.exit_status = EXIT_OK if comparison.equal else EXIT_DIFFERENT  # also when stdout's reader goes away
    labels = source_label(args.a, docs[0]), source_label(args.b, docs[1])
    if args.brief:  # as diff -q: a line when they differ, nothing when they are equal
        if not comparison.equal:
            print(f"{escape(str(args.a))} and {escape(str(args.b))} differ")
    elif args.json:
        sys.stdout.write(as_json(comparison, str(args.a), str(args.b)))
    else:
        sys.stdout.write("".join(line + "\n" for line in render(comparison, *labels)))
    return EXIT_OK if comparison.equal else EXIT_DIFFERENT


def cmd_edit(args: argparse.Namespace) -> int:
    from .edit import Edits
    from .edit_values import pairs, utf8
    from .in_place import Locked, interrupted_edit, recover

    edits = Edits(set=pairs(args.set, "--set"), set_type=pairs(args.set_type, "--set-type"),
                  set_file={k: Path(v) for k, v in pairs(args.set_file, "--set-file").items()},
                  delete=[utf8(k, "--delete") for k in args.delete],
                  rename_tensor=pairs(args.rename_tensor, "--rename-tensor"),
                  rename_key=pairs(args.rename_key, "--rename-key"))
    if not (edits.set or edits.set_file or edits.delete or edits.rename_tensor or edits.rename_key):
        raise UsageError("nothing to edit: give --set, --set-file, --delete, --rename-key or --rename-tensor")
    with Locked(args.file, exclusive=args.in_place and not args.dry_run) as held:
        if args.in_place and not args.dry_run and recover(args.file, held.fd):
            print(f"fmt: {escape(str(args.file))}: an interrupted --in-place edit was undone (its header put back)",
                  file=sys.stderr)
        elif interrupted_edit(args.file, held.fd):
            raise UsageError(f"{args.file}: an --in-place edit of this file was interrupted and its old header is "
                             f"not back yet; fmt edit {args.file} --in-place puts it back first")
        return _edit_held(args, edits)


def _edit_held(args: argparse.Namespace, edits: Any) -> int:
    from . import edit, in_place
    from .engine import parse
    from .output import atomic_output

    doc = parse(args.file)
    fields, changes = edit.apply(doc, edits)
    header = edit.header_bytes(doc, fields)
    old_start = int(doc.fields["data_start"])
    summary = "; ".join(changes)
    if args.dry_run:
        if args.in_place:
            in_place.check_fits(doc, header)
        where = "in place" if args.in_place else f"to {output_path(args.output, args.file)}"
        print(f"{escape(str(args.file))}: would {escape(summary)}, written {escape(where)} (header of "
              f"{old_start:,} bytes becomes {len(header):,}); nothing was written")
        return EXIT_OK
    if args.in_place:
        from .output import _signals_blocked

        with _signals_blocked():
            in_place.write_in_place(doc, header)
        target, how = args.file, "header rewritten in place"
    else:
        target = output_path(args.output, args.file)
        with atomic_output(target, force=args.force, inputs=[args.file]) as temporary:
            how = "tensor data " + edit.write_copy(doc, header, temporary)
    if not args.quiet:
        print(f"{escape(str(target))}: {escape(summary)}; {how} ({doc.size - old_start:,} bytes of tensor data)")
    return EXIT_OK


def _parse_directory(args: argparse.Namespace) -> Any:
    return _read_directory(args.file, args.base, args.schema, _parameters(args))


def _read_directory(path: Path, base: Path | None, schema: str | None, params: dict[str, Any]) -> Any:
    from .bundles import read_bundle, recognise

    bundle = recognise(path)
    if bundle is None:
        raise UsageError(f"{path}: a directory, and not one of the directory layouts ggfmt knows (PEFT and mlx-lm "
                         "adapters, CLIP models); fmt parse reads files")
    if schema is not None or params:
        raise UsageError(f"{path}: this {bundle.title} is read by its bundle declaration, not by a schema")
    # Shown as it is: fields that come from the base model only when --base names it, no checks.
    return read_bundle(bundle, path, base, converting=False)


def _begin_command() -> None:
    """Forget what an earlier command in this process read and wrote (fmt called from Python)."""
    from .inputs import forget_inputs
    from .output import forget_committed

    forget_inputs()
    forget_committed()


def cmd_to_gguf(args: argparse.Namespace) -> int:
    return _convert_command(args, "gguf")


def _convert_command(args: argparse.Namespace, target: str) -> int:
    """``to-gguf`` (target ``gguf``) and ``to-ggla`` (a schema as the target): plan the conversion
    the registry finds, then write it to a temporary file that is renamed when complete."""
    from .convert import convert, default_output
    from .output import atomic_output, check_target
    from .plan_report import describe_plan

    _begin_command()
    source: Path = args.file
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    options = _conversion_options(args)
    out = output_path(args.output, lambda: default_output(source, target, options, args.outtype))
    if not args.dry_run:
        check_target(out, force=args.force, inputs=[source])  # before the work, not only after it
    conversion = convert(source, target, schema=getattr(args, "schema", None), params=_parameters(args),
                         mapping=getattr(args, "mapping", None), base=getattr(args, "base", None),
                         arch=getattr(args, "arch", None), options=options, outtype=args.outtype)
    for warning in conversion.warnings:
        print(f"fmt: warning: {escape(warning)}", file=sys.stderr)
    plan = conversion.plan
    if args.dry_run:
        print(describe_plan(plan, out, conversion.description, target))
        return EXIT_OK
    bar = _progress_bar(plan.payload_bytes, args.quiet) if target == "gguf" else None
    try:
        with atomic_output(out, force=args.force, inputs=[source]) as temporary:
            if target == "gguf":
                from .emit.gguf import write_gguf

                write_gguf(plan, temporary, bar.update if bar is not None else None)
            else:
                from .emit.schema import write_schema_file

                write_schema_file(plan, target, temporary)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        size = out.stat().st_size
        keys = len(plan.metadata) + 1 if target == "gguf" else len(plan.metadata)
        noun = "key" if target == "gguf" else "header field"
        print(f"{escape(str(out))}: {_count(len(plan.tensors), 'tensor')}, {_count(keys, noun)}, {size:,} bytes "
              f"({conversion.description})")
        for note in conversion.notes:
            print(f"  note: {escape(note)}")
    return EXIT_OK


# the options a conversion's table may declare (`options:`), passed on when given: the tables
# say which take them and what they mean
CONVERSION_OPTIONS = ("context_length", "gqa", "eps", "name", "desc", "model_only", "vocab_model", "adapter_only",
                      "lora_alpha", "lora_r", "text_only", "vision_only", "llava_projector", "use_f32", "image_mean",
                      "image_std", "size", "config")


def _conversion_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given: the named flags, and ``--option NAME=VALUE`` for any option a table declares
    (read by its declared type once the table is known)."""
    from .engine import TextValue

    given = {name: getattr(args, name, None) for name in CONVERSION_OPTIONS}
    # (not `in (None, False)`: 0 == False, and an explicit 0 is a value to check, not an absence)
    options = {name: value for name, value in given.items() if value is not None and value is not False}
    for item in getattr(args, "option", None) or []:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--option {item!r}: expected NAME=VALUE")
        options[name] = TextValue(text)
    return options


def cmd_to_ggla(args: argparse.Namespace) -> int:
    return _convert_command(args, "ggla")


HF_DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


def cmd_to_hf(args: argparse.Namespace) -> int:
    """Plan the conversion the registry finds for the checkpoint (target ``hf``), then write the
    directory: the tokenizer (on request), the table's JSON files and model.safetensors, made next
    to OUT_DIR and renamed into place."""
    from .convert import convert
    from .emit.hf import WEIGHTS, planned, write_config, write_safetensors, write_tokenizer
    from .output import atomic_directory, check_directory_target
    from .plan_report import describe_hf_conversion

    _begin_command()
    source: Path = args.file
    target: Path = args.output
    outtype = args.outtype
    if args.dtype is not None:  # the older name of --outtype
        named = {v: k for k, v in HF_DTYPES.items()}[args.dtype]
        if outtype is not None and outtype != named:
            raise UsageError(f"--outtype {outtype} and --dtype {args.dtype} disagree; --outtype is enough")
        outtype = named
    inputs = [p for p in (source, args.config, args.tokenizer) if p is not None]
    if not args.dry_run:
        check_directory_target(target, force=args.force, inputs=inputs)  # before the work, not only after it
    if args.tokenizer is not None and not args.tokenizer.is_file():
        raise UsageError(f"{args.tokenizer}: no such file")
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    conversion = convert(source, "hf", options=_conversion_options(args), outtype=outtype)
    plan = conversion.plan
    tensors = [planned(t) for t in plan.tensors]
    config = plan.files.get("config.json", {})
    dtype = str(config.get("dtype", HF_DTYPES[outtype or "f32"])) if isinstance(config, dict) else ""
    layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    if args.dry_run:
        print(describe_hf_conversion(tensors, plan.files, target, conversion.description))
        return EXIT_OK
    tokenizer_class = conversion.hf_tokenizer
    if args.tokenizer is not None and tokenizer_class is None:
        raise UsageError("--tokenizer: this conversion names no tokenizer class to save it with")
    bar = _progress_bar(plan.payload_bytes, args.quiet)
    try:
        with atomic_directory(target, force=args.force, inputs=inputs) as temporary:
            if args.tokenizer is not None and tokenizer_class is not None:
                write_tokenizer(args.tokenizer, temporary, tokenizer_class)  # first: quick, and most likely to fail
            for name, value in plan.files.items():
                write_config(temporary / name, value)
            size = write_safetensors(temporary / WEIGHTS, tensors, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        tokenizer = ", tokenizer" if args.tokenizer is not None else ""
        layer_count = f"{_count(layers, 'layer')}, " if isinstance(layers, int) else ""
        print(f"{escape(str(target))}: {_count(len(tensors), 'tensor')}, {layer_count}{dtype}, {size:,} bytes"
              f"{tokenizer} ({conversion.description})")
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _progress_bar(total: int, quiet: bool) -> Any:
    if quiet or total < PROGRESS_THRESHOLD or not sys.stderr.isatty():
        return None
    import os

    from tqdm import tqdm

    try:
        columns, lines = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        columns = lines = 0
    # A terminal that reports no size (a fresh pseudo-terminal) would make tqdm hide the bar.
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="copying tensors", file=sys.stderr,
                ncols=columns if columns > 0 else 80, nrows=lines if lines > 0 else 24)


def cmd_schema_list(args: argparse.Namespace) -> int:
    from .workbench import list_lines, schema_list

    rows = schema_list()
    text = json.dumps(rows, indent=2) + "\n" if args.json else "".join(escape(line) + "\n" for line in list_lines(rows))
    sys.stdout.write(text)
    return EXIT_OK


def cmd_schema_check(args: argparse.Namespace) -> int:
    from .schema_check import check_paths

    for path in args.paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    problems = check_paths(list(args.paths), args.parse)
    sys.stdout.write("".join(escape(str(p)) + "\n" for p in problems))
    if not problems:
        print(f"{len(args.paths)} file{'s' if len(args.paths) > 1 else ''} checked: no problems", file=sys.stderr)
    return EXIT_BAD_INPUT if problems else EXIT_OK


def cmd_schema_export_ksy(args: argparse.Namespace) -> int:
    from .ksy import export
    from .output import atomic_output
    from .workbench import schema_path

    path = schema_path(args.name)
    text = export(path)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    with atomic_output(output_path(args.output, Path(path.stem + ".ksy")), force=args.force) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return EXIT_OK


def cmd_schema_show(args: argparse.Namespace) -> int:
    from .workbench import describe, markdown

    desc = describe(args.name)
    sys.stdout.write(json.dumps(desc, indent=2) + "\n" if args.json else markdown(desc))
    return EXIT_OK


# Closing the terminal (SIGHUP) or Ctrl-\\ (SIGQUIT) must clean up like Ctrl-C and SIGTERM.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))
STOP_WORDS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hung up", "SIGQUIT": "quit"}


class Stopped(BaseException):
    """A stop signal, raised where the program is so that partial outputs are removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []  # the stop signal taken, in case the Stopped raised for it was swallowed


def _stop(signum: int, frame: FrameType | None) -> None:
    # (no import here: a signal that arrives while ggfmt.output is itself being imported would find
    # it half made; until it is loaded, no output can be taking its name)
    output = sys.modules.get("ggfmt.output")
    defer_stop = getattr(output, "defer_stop", None)
    if defer_stop is not None and defer_stop(signum):  # an output is taking its name: answered once it has it
        return
    # Further signals are ignored from here on: a second Ctrl-C must not cut the cleanup short.
    _ignore_stop_signals()
    _received.append(signum)
    raise Stopped(signum)


def _unraisable(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """Python's hook for exceptions it cannot raise (inside a weakref callback or a __del__),
    silent for a Stopped: the signal is still answered once the work returns (see main)."""

    def silent_for_stops(unraisable: Any) -> object:
        if isinstance(unraisable.exc_value, Stopped):
            return None
        return hook(unraisable)

    return silent_for_stops


def _ignored(signum: int, frame: FrameType | None) -> None:
    """A stop signal that arrives once stopping (or finishing) is under way: nothing more to do.

    A Python handler rather than SIG_IGN: a signal already pending when the disposition became
    SIG_IGN makes Python print a "Signal ... ignored due to race condition" traceback."""


def _ignore_stop_signals() -> None:
    for number in STOP_SIGNALS:
        signal.signal(number, _ignored)


def _install_signal_handlers() -> dict[int, Any]:
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    for number in STOP_SIGNALS:
        # A signal ignored when fmt started (nohup, a shell's background job) stays ignored.
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _stop)
    if hasattr(signal, "SIGXFSZ"):
        # Past a file-size limit (ulimit -f) a write then fails with EFBIG, which is reported,
        # instead of the signal killing fmt and leaving its partial output behind.
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return previous


def _stopped_message(signum: int) -> str:
    from .output import committed_outputs

    word = STOP_WORDS.get(signal.Signals(signum).name, "stopped")
    done = committed_outputs()
    if done:
        return f"fmt: {word}; {', '.join(escape(str(p)) for p in done)} had already been written in full"
    return f"fmt: {word}; no output was written"


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` ran: ``fmt edit``'s, ``fmt schema check``'s."""
    for word in ("command", "tool"):
        chosen = getattr(args, word, None)
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if chosen is None or not actions or chosen not in actions[0].choices:
            break
        parser = actions[0].choices[chosen]
    return parser


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run one fmt command; returns its exit status.

    ``exiting``: the process ends right after (the ``fmt`` program). Stop signals then stay
    ignored once the work is done, so that a late SIGTERM cannot turn a finished conversion into
    a killed process; otherwise (fmt called from Python) the previous handlers are restored.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser, with its usage
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    previous = _install_signal_handlers()
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(previous_hook)
    _received.clear()
    try:
        status = int(args.run(args))
        _ignore_stop_signals()  # the work is done: a signal now would only spoil the exit status
        if _received:  # a signal whose Stopped Python swallowed: the work went on and finished
            print(_stopped_message(_received[0]), file=sys.stderr)
            return 128 + _received[0]
        return status
    except GgfmtError as e:
        _error(str(e))
        return EXIT_BAD_INPUT
    except Stopped as e:
        print(_stopped_message(e.signum), file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # SIGINT before the handlers were installed, or with them ignored
        print(_stopped_message(signal.SIGINT), file=sys.stderr)
        return 128 + signal.SIGINT
    except StdoutFailed as e:  # (only the fmt program's guarded stdout raises it)
        return _stdout_failed(e, getattr(args, "exit_status", EXIT_OK))
    except OSError as e:
        if not environment_error(e):
            return _internal_error(e, args.debug)
        _error(describe_os_error(e))
        return EXIT_BAD_INPUT
    except MemoryError:
        _error("out of memory: this machine, or a limit set on this process (ulimit -v), leaves ggfmt too "
               "little; free memory or raise the limit")
        return EXIT_BAD_INPUT
    except ModuleNotFoundError as e:
        hint = OPTIONAL_PACKAGES.get((e.name or "").partition(".")[0])
        if hint is None:
            return _internal_error(e, args.debug)
        _error(f"this input needs the package {e.name}, which is not installed: {hint}")
        return EXIT_BAD_INPUT
    except Exception as e:  # a bug: say so briefly, show the traceback only on request
        return _internal_error(e, args.debug)
    finally:
        _ignore_stop_signals()
        sys.unraisablehook = previous_hook
        if not exiting:
            for number, handler in previous.items():
                signal.signal(number, handler)


def run() -> None:
    """The ``fmt`` and ``ggfmt`` programs."""
    from .streams import guard_standard_streams

    guard_standard_streams()
    status = main(exiting=True)
    # The work is done and its outcome printed. Python would put the default signal handlers back
    # while it shuts down, so that a second Ctrl-C arriving then (or delivered to a thread) kills
    # the process instead of letting it exit with its status: stop signals are ignored from here,
    # and the process ends at once. Nothing of ggfmt's runs at exit; the streams are flushed here.
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    try:
        sys.stdout.flush()
    except StdoutFailed as e:
        status = _stdout_failed(e, status)
    sys.stderr.flush()
    os._exit(status)


def _stdout_failed(failure: Any, status: int) -> int:
    """The status of a command whose stdout failed (see ggfmt.streams), said on stderr."""
    from .output import committed_outputs

    if isinstance(failure.error, BrokenPipeError):  # the reader went away (fmt parse ... | head)
        return status
    written = committed_outputs()
    reason = (failure.error.strerror or str(failure.error)).lower()
    if written:
        print(f"fmt: warning: standard output: {reason}; {', '.join(escape(str(p)) for p in written)} had "
              "already been written in full", file=sys.stderr)
        return status
    _error(f"standard output: {reason}")
    return EXIT_BAD_INPUT


def _error(message: str) -> None:
    print(f"fmt: error: {escape(message)}", file=sys.stderr)


def _internal_error(e: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"fmt: internal error: {type(e).__name__}: {escape(str(e))}. This is a bug in ggfmt: please open an "
          "issue in ggfmt's repository with the command you ran and this message (--debug shows the traceback)",
          file=sys.stderr)
    return EXIT_INTERNAL
