"""The ``fmt`` command line: the commands' registry, the parser it builds, signals and exit codes.
No format knowledge lives here.

Each command is a row of :data:`COMMANDS` and a module of :mod:`ggfmt.commands` with
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``. Those modules import what
they need to run inside ``run``, so ``fmt --help`` starts fast and never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from . import __version__
from .commands._common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, Formatter, Parser, debug_option
from .errors import GgfmtError
from .io.environment import OPTIONAL_PACKAGES, describe_os_error, environment_error
from .io.signals import STOP_SIGNALS
from .io.streams import StdoutFailed
from .io.text import escape

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


# The commands, in the order `fmt --help` lists them: name -> (its module, its one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "parse": ("ggfmt.commands.parse", "show a file's fields and tensors (header only, payloads not read)"),
    "to-gguf": ("ggfmt.commands.to_gguf", "convert a checkpoint or an adapter to GGUF"),
    "to-ggla": ("ggfmt.commands.to_ggla", "convert a PEFT adapter to a 2023 ggla adapter"),
    "to-hf": ("ggfmt.commands.to_hf", "convert a native Gemma checkpoint to a Hugging Face model directory"),
    "diff": ("ggfmt.commands.diff", "compare two files: keys, tensors, content"),
    "edit": ("ggfmt.commands.edit", "change a GGUF's metadata or tensor names"),
    "schema": ("ggfmt.commands.schema", "the schema author's tools: list, show, check"),
    "schemas": ("ggfmt.commands.schemas", "the same as `fmt schema list`"),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``fmt``, with the arguments of the command ``argv`` names: only that
    command's module is imported, and only its options are built (a conversion's are read from
    the mapping tables), so that every other command starts as fast as before."""
    parser = Parser(prog="fmt", description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"ggfmt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # fmt's own options take no values: the first word that is not an option names the command
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, (module_name, summary) in COMMANDS.items():
        if name != chosen:
            commands.add_parser(name, help=summary)
            continue
        module = importlib.import_module(module_name)
        command = commands.add_parser(name, parents=[debug_option()], help=summary,
                                      description=module.DESCRIPTION, formatter_class=Formatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


STOP_WORDS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hung up", "SIGQUIT": "quit"}


class Stopped(BaseException):
    """A stop signal, raised where the program is so that partial outputs are removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_received: list[int] = []  # the stop signals taken (the first is answered), in case its Stopped was swallowed


def _stop(signum: int, frame: FrameType | None) -> None:
    # (no import here: a signal that arrives while ggfmt.io.output is itself being imported would find
    # it half made; until it is loaded, no output can be taking its name)
    output = sys.modules.get("ggfmt.io.output")
    defer_stop = getattr(output, "defer_stop", None)
    if defer_stop is not None and defer_stop(signum):  # an output is taking its name: answered once it has it
        return
    _received.append(signum)
    # Further signals are ignored from here on: a second Ctrl-C must not cut the cleanup short. A
    # second signal that lands before its handler is replaced runs this handler again, nested in
    # this call: that call raises for the first signal too, the one the user gave first.
    _ignore_stop_signals()
    raise Stopped(_received[0])


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


def _signal_handlers() -> dict[int, Any]:
    """The handlers :func:`_install_signal_handlers` replaces, to be put back after the command."""
    numbers = [*STOP_SIGNALS, *([signal.SIGXFSZ] if hasattr(signal, "SIGXFSZ") else [])]
    return {number: signal.getsignal(number) for number in numbers}


def _install_signal_handlers() -> None:
    for number in STOP_SIGNALS:
        # A signal ignored when fmt started (nohup, a shell's background job) stays ignored.
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _stop)
    if hasattr(signal, "SIGXFSZ"):
        # Past a file-size limit (ulimit -f) a write then fails with EFBIG, which is reported,
        # instead of the signal killing fmt and leaving its partial output behind.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _stopped_message(signum: int) -> str:
    from .io.output import committed_outputs

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
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(words)  # a command's options come from the tables, which may be broken
    except GgfmtError as e:
        _error(str(e))
        return EXIT_BAD_INPUT
    args, extra = parser.parse_known_args(words)
    if extra:  # said by the command's own parser, with its usage
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    previous = _signal_handlers()
    previous_hook = sys.unraisablehook
    _received.clear()
    try:
        # (inside the try: a signal that arrives while the handlers are being installed is a stop too)
        _install_signal_handlers()
        sys.unraisablehook = _unraisable(previous_hook)
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
    from .io.streams import guard_standard_streams

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
    """The status of a command whose stdout failed (see ggfmt.io.streams), said on stderr."""
    from .io.output import committed_outputs

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
