"""`make bench`: how fast and how lean ggfmt's conversion is, against the physical floor (cp).

Generates checkpoints through ggfmt's own ggcp schema (build path) in a temporary directory,
then prints one table. Every timing is the median of several runs that alternate with the
comparison, each started from a quiet disk (an untimed `sync` first); the range the runs fell
in is shown beside it. `fmt to-gguf` has its output on disk (direct I/O, then fsync) before
renaming it into place; plain `cp` leaves it in the page cache, so `cp` followed by `sync` of
the copy is shown too, as the durable floor. Peak RSS is the child's ru_maxrss. Nothing here
is asserted: targets are shown beside the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ggfmt
from make_checkpoint import make_checkpoint

BIN = Path(sys.executable).parent
FMT = str(BIN / "fmt")


def run(argv: Sequence[str], env: dict[str, str] | None = None, allow_failure: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process, started from a quiet disk."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=None if env is None else {**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and not allow_failure:
        assert proc.stderr is not None
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024


def cpu(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """CPU seconds (user + system) and peak RSS (bytes) of one child process."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=None if env is None else {**os.environ, **env})
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def llama_cpp_converter(work: Path) -> tuple[Path, dict[str, str]] | None:
    """llama.cpp's convert_llama_ggml_to_gguf.py with its own gguf-py, from the llama-cpp-python source
    distribution of the version the tests install (pip's cache has it once the tests were set up)."""
    import tomllib

    pins = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    pin = next((d for extra in pins["project"]["optional-dependencies"].values() for d in extra
                if d.startswith("llama-cpp-python")), "llama-cpp-python")
    where = work / "sdist"
    got = subprocess.run([sys.executable, "-m", "pip", "download", pin, "--no-binary", ":all:", "--no-deps", "-q",
                          "-d", str(where)], capture_output=True)
    archives = list(where.glob("*.tar.gz")) if got.returncode == 0 else []
    if not archives:
        return None
    import tarfile

    with tarfile.open(archives[0]) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/gguf-py/" in m.name
                   or m.name.endswith("/vendor/llama.cpp/convert_llama_ggml_to_gguf.py")]
        tar.extractall(where, members, filter="data")
    script = next(where.glob("*/vendor/llama.cpp/convert_llama_ggml_to_gguf.py"))
    compiled(script.parent / "gguf-py")  # (as ggfmt is: both timed with their bytecode compiled)
    return script, {"PYTHONPATH": str(script.parent / "gguf-py")}


def header_rows(work: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """2023 files whose header is the work (n_embd 32, one layer, f32): ggfmt's parse against a
    plain struct reader of the same header, each process's CPU beyond its own start-up (fmt --help,
    python -c pass); to-gguf against llama.cpp's convert_llama_ggml_to_gguf.py, CPU and peak RSS."""
    maker = str(Path(__file__).resolve().parent / "make_legacy.py")
    reader = str(Path(__file__).resolve().parent / "read_legacy_header.py")
    converter = llama_cpp_converter(work)
    start_fmt = statistics.median(cpu([FMT, "--help"])[0] for _ in range(runs))
    start_python = statistics.median(cpu([sys.executable, "-c", "pass"])[0] for _ in range(runs))
    rows = []
    for n_vocab in (32_000, 250_880):
        source, out, ref = work / f"vocab-{n_vocab}.bin", work / "vocab.gguf", work / "vocab-ref.gguf"
        subprocess.run([sys.executable, maker, str(source), "--version", "3", "--layers", "1", "--embd", "32",
                        "--vocab", str(n_vocab), "--f32"], check=True)
        label = f"{n_vocab:,}-token 2023 file ({source.stat().st_size / 1e6:,.0f} MB)"
        ours = statistics.median(cpu([FMT, "parse", str(source)])[0] for _ in range(runs)) - start_fmt
        plain = statistics.median(cpu([sys.executable, reader, str(source)])[0] for _ in range(runs)) - start_python
        rows.append(row(f"fmt parse work, {label}", f"{ours:.2f} s CPU (struct reader {plain:.2f} s, "
                        f"x{ours / max(plain, 1e-3):.1f})", "<= 3x the reader", ours <= 3 * plain))
        converts = []
        for _ in range(runs):
            drop(out)
            converts.append(cpu([FMT, "to-gguf", str(source), "-o", str(out), "--quiet"]))
        t = statistics.median(c[0] for c in converts)
        peak = max(c[1] for c in converts) / 2**20
        if converter is not None:
            refs = []
            for _ in range(runs):
                drop(ref)
                refs.append(cpu([sys.executable, str(converter[0]), "--input", str(source), "--output", str(ref)],
                                converter[1])[0])
            t_ref = statistics.median(refs)
            # (the target is set for the largest vocabulary; below it, start-up shares the figure)
            target = n_vocab == 250_880
            rows.append(row(f"fmt to-gguf CPU, {label}", f"{t:.2f} s (llama.cpp's converter {t_ref:.2f} s, "
                            f"x{t / t_ref:.2f})", "<= 0.5x llama.cpp's" if target else "(set for 250,880 tokens)",
                            t <= 0.5 * t_ref if target else None))
        else:
            rows.append(row(f"fmt to-gguf CPU, {label}", f"{t:.2f} s (llama.cpp's converter: not available)",
                            "<= 0.5x llama.cpp's", None))
        rows.append(row(f"fmt to-gguf peak RSS, {label}", f"{peak:.0f} MiB", "<= 100 MiB", peak <= 100))
        for path in (source, out, ref):
            drop(path)
    return rows


def compiled(package: Path) -> None:
    """Byte-compile a package before it is timed, as an installed wheel is: a clone run with
    PYTHONDONTWRITEBYTECODE (or a freshly edited file) would compile its modules on every run."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, stdout=subprocess.DEVNULL)


def drop(path: Path) -> None:
    path.unlink(missing_ok=True)


def spread(values: list[float]) -> str:
    """The median, and the range the runs fell in (this machine's disk and CPU are shared)."""
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def row(name: str, value: str, target: str, ok: bool | None) -> tuple[str, str, str, str]:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    return name, value, target, verdict


def model_rows(work: Path, runs: int, peft_mb: float) -> list[tuple[str, str, str, str]]:
    """Conversions of adapters and models (PEFT, CLIP, Gemma): wall time and peak RSS against 64 MiB."""
    # Generated in child processes: a child's peak RSS counts the pages it shared with this
    # process when it was forked, so this process must stay small (torch.save holds a whole model).
    maker = str(Path(__file__).resolve().parent / "make_models.py")
    peft, clip, gemma = work / "peft", work / "clip", work / "gemma.ckpt"
    for argv in (["peft", str(peft), "--size-mb", str(peft_mb)], ["clip", str(clip)], ["gemma", str(gemma)]):
        subprocess.run([sys.executable, maker, *argv], check=True)
    out = work / "model-out"
    jobs = [
        ("PEFT -> GGUF adapter", peft, [FMT, "to-gguf", str(peft), "--base", str(work / "peft-base"), "-o", str(out)]),
        ("PEFT -> ggla", peft / "adapter_model.safetensors", [FMT, "to-ggla", str(peft), "-o", str(out)]),
        ("CLIP -> GGUF f16", clip / "model.safetensors", [FMT, "to-gguf", str(clip), "-o", str(out)]),
        ("Gemma -> HF f32", gemma, [FMT, "to-hf", str(gemma), "--config", str(work / "gemma.json"), "-o", str(out)]),
        ("Gemma -> HF bf16", gemma, [FMT, "to-hf", str(gemma), "--config", str(work / "gemma.json"), "-o", str(out),
                                     "--outtype", "bf16"]),
    ]
    rows = []
    for name, source, argv in jobs:
        size = sum(p.stat().st_size for p in source.iterdir()) if source.is_dir() else source.stat().st_size
        times, peaks = [], []
        for _ in range(runs):
            shutil.rmtree(out, ignore_errors=True)
            drop(out)
            t, peak = run([*argv, "--quiet"])
            times.append(t)
            peaks.append(peak)
        shutil.rmtree(out, ignore_errors=True)
        drop(out)
        label = f"{name}, {size / 1e6:,.0f} MB"
        peak_mb = max(peaks) / 2**20
        rows.append(row(f"{label}: wall", spread(times), "", None))
        rows.append(row(f"{label}: peak RSS", f"{peak_mb:.1f} MiB", "<= 64 MiB", peak_mb <= 64))
    return rows


def gguf_rows(work: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """Parsing GGUF headers shaped like today's downloads and the hostile many-small-items files,
    beside gguf-py's gguf-dump; and editing general.name of a 3 GB GGUF against cp."""
    maker = str(Path(__file__).resolve().parent / "make_gguf.py")
    rows = []
    for kind, label in (("llama3", "Llama-3-like header"), ("qwen", "Qwen-2.5-like header")):
        path = work / f"{kind}.gguf"
        subprocess.run([sys.executable, maker, kind, str(path)], check=True)
        parse = [run([FMT, "parse", str(path)]) for _ in range(runs)]
        as_json = [run([FMT, "parse", str(path), "--json"])[0] for _ in range(runs)]
        dump = [run([str(BIN / "gguf-dump"), "--no-tensors", str(path)]) for _ in range(runs)]
        t = statistics.median(p[0] for p in parse)
        peak = max(p[1] for p in parse) / 2**20
        t_json = statistics.median(as_json)
        t_dump = statistics.median(d[0] for d in dump)
        rows.append(row(f"fmt parse, {label}", spread([p[0] for p in parse]), "<= 0.35 s", t <= 0.35))
        rows.append(row(f"fmt parse peak RSS, {label}", f"{peak:.1f} MiB", "<= 64 MiB", peak <= 64))
        rows.append(row(f"fmt parse --json, {label}", spread(as_json), "<= 1.5 s", t_json <= 1.5))
        rows.append(row(f"gguf-dump --no-tensors, {label}", spread([d[0] for d in dump]),
                        f"fmt parse x{t_dump / t:.0f} faster, "
                        f"{max(d[1] for d in dump) / 2**20:.0f} MiB", None))
        drop(path)
    printer = str(Path(__file__).resolve().parent / "print_gguf_items.py")
    for kind in ("small-kvs", "small-infos", "small-array"):
        path = work / f"{kind}.gguf"
        subprocess.run([sys.executable, maker, kind, str(path)], check=True)
        measured = [run([FMT, "parse", str(path)], allow_failure=True) for _ in range(runs)]
        t = statistics.median(m[0] for m in measured)
        peak = max(m[1] for m in measured) / 2**20
        rows.append(row(f"fmt parse, 10 MB of tiny items ({kind})", spread([m[0] for m in measured])
                        + f", {peak:.0f} MiB", "<= 2 s, <= 200 MiB", t <= 2 and peak <= 200))
        # what Python itself costs: a struct reader printing a line per item, nothing checked or escaped
        floor = [run([sys.executable, printer, str(path)]) for _ in range(runs)]
        rows.append(row(f"  plain struct reader and printer ({kind})", spread([f[0] for f in floor])
                        + f", {max(f[1] for f in floor) / 2**20:.0f} MiB",
                        f"fmt parse x{t / statistics.median(f[0] for f in floor):.1f}", None))
        as_json = [run([FMT, "parse", str(path), "--json"], allow_failure=True)[0] for _ in range(runs)]
        rows.append(row(f"fmt parse --json, 10 MB of tiny items ({kind})", spread(as_json), "<= 4 s",
                        statistics.median(as_json) <= 4))
        drop(path)
    rows.extend(nested_rows(work, runs, maker))
    big = work / "big.gguf"
    subprocess.run([sys.executable, maker, "llama3-3gb-filled", str(big)], check=True)
    out, copy = work / "edited.gguf", work / "copy.gguf"
    edits, copies, synced = [], [], []
    for _ in range(runs):
        drop(copy)
        copies.append(run(["cp", str(big), str(copy)])[0])
        drop(copy)
        synced.append(run(["sh", "-c", 'cp "$0" "$1" && sync "$1"', str(big), str(copy)])[0])
        drop(copy)
        drop(out)
        edits.append(run([FMT, "edit", str(big), "--set", "general.name=edited", "-o", str(out), "--quiet"])[0])
        drop(out)
    size = f"{big.stat().st_size / 1e9:.1f} GB"
    t_edit, t_cp = statistics.median(edits), statistics.median(copies)
    rows.append(row(f"fmt edit general.name -o, {size}", spread(edits), "", None))
    rows.append(row(f"cp, {size}", spread(copies), "", None))
    rows.append(row(f"fmt edit - cp, {size}", f"{t_edit - t_cp:+.2f} s", "<= +0.35 s", t_edit - t_cp <= 0.35))
    # fmt edit syncs its output before naming it (a crash never leaves a truncated file); cp does not
    t_synced = statistics.median(synced)
    rows.append(row(f"cp + sync of the copy, {size}", spread(synced), "(the durable floor)", None))
    rows.append(row(f"fmt edit - (cp + sync), {size}", f"{t_edit - t_synced:+.2f} s", "", None))
    drop(big)
    return rows


def nested_rows(work: Path, runs: int, maker: str) -> list[tuple[str, str, str, str]]:
    """Headers of many nested or keyed records, each command under 20 s and 300 MiB: parse, edit
    and diff of a GGUF whose one value is an array of 820,000 arrays; diff of two GGUFs of 450,000
    pairs each."""
    aoa, kvs, copy, out = work / "aoa.gguf", work / "kvs.gguf", work / "kvs2.gguf", work / "edited.gguf"
    subprocess.run([sys.executable, maker, "nested-arrays", str(aoa)], check=True)
    subprocess.run([sys.executable, maker, "unique-kvs", str(kvs)], check=True)
    shutil.copyfile(kvs, copy)
    jobs = [("fmt parse, 820,000 nested arrays (9.8 MB)", [FMT, "parse", str(aoa)]),
            ("fmt edit -o, 820,000 nested arrays", [FMT, "edit", str(aoa), "--set", "general.name=x", "-o", str(out),
                                                    "--force", "--quiet"]),
            ("fmt diff, 820,000 nested arrays with itself", [FMT, "diff", str(aoa), str(aoa)]),
            ("fmt diff, 450,000 pairs with a copy (9 MB)", [FMT, "diff", str(kvs), str(copy)])]
    rows = []
    for label, argv in jobs:
        measured = [run(argv) for _ in range(runs)]
        t = statistics.median(m[0] for m in measured)
        peak = max(m[1] for m in measured) / 2**20
        rows.append(row(label, spread([m[0] for m in measured]) + f", {peak:.0f} MiB", "< 20 s, < 300 MiB",
                        t < 20 and peak < 300))
    for path in (aoa, kvs, copy, out):
        drop(path)
    return rows


def timed(argv: list[str], out: Path, runs: int) -> tuple[list[float], list[int]]:
    """Wall seconds and peak RSS of ``runs`` runs of ``argv``, its output ``out`` removed before each."""
    times, peaks = [], []
    for _ in range(runs):
        drop(out)
        t, peak = run(argv)
        times.append(t)
        peaks.append(peak)
    drop(out)
    return times, peaks


def legacy_rows(work: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """2023 model files (LLaMA-7B-shaped, 8 layers of q4_0) to GGUF: GGJT v3 blocks are copied,
    GGJT v1 blocks rewritten in today's layout; peak RSS at two sizes shows whether memory is flat."""
    maker = str(Path(__file__).resolve().parent / "make_legacy.py")
    out, rows = work / "legacy.gguf", []
    for version, layers, what in ((3, 8, "copied"), (1, 2, "rewritten"), (1, 8, "rewritten")):
        source = work / f"ggjt-v{version}-{layers}.bin"
        subprocess.run([sys.executable, maker, str(source), "--version", str(version), "--layers", str(layers)],
                       check=True)
        times, peaks = timed([FMT, "to-gguf", str(source), "-o", str(out), "--quiet"], out, runs)
        label = f"GGJT v{version} q4_0 -> GGUF ({what}), {source.stat().st_size / 1e6:,.0f} MB"
        rows.append(row(f"{label}: wall", spread(times), "", None))
        rows.append(row(f"{label}: peak RSS", f"{max(peaks) / 2**20:.1f} MiB", "(flat: the same at any size)", None))
        drop(source)
    return rows


def family_rows(work: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """A 2023 GPT-2 file of the ggml examples with the real 50,257-token vocabulary (q4_0, from
    fixtures/): recognised among the nine layouts with its magic and parsed, then converted, its
    50,000 merges rebuilt from the vocabulary."""
    source = Path(__file__).resolve().parent.parent / "fixtures" / "ggml-family" / "ggml" / "gpt2-realvocab-q4_0.bin"
    out, rows = work / "gpt2.gguf", []
    for what, argv in (("fmt parse", [FMT, "parse", str(source)]),
                       ("fmt to-gguf", [FMT, "to-gguf", str(source), "-o", str(out), "--quiet"])):
        times, peaks = timed(argv, out, runs)
        label = f"{what}, GPT-2 of 50,257 tokens (ggml example, q4_0, {source.stat().st_size / 1e6:.1f} MB)"
        rows.append(row(f"{label}: wall", spread(times), "", None))
        rows.append(row(f"{label}: peak RSS", f"{max(peaks) / 2**20:.1f} MiB", "", None))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (median)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[100, 1000], help="checkpoint sizes in MB")
    parser.add_argument("--peft-mb", type=float, default=770, help="size of the PEFT adapter in MB")
    parser.add_argument("--dir", type=Path, help="where to put the checkpoints (default: a temporary directory)")
    parser.add_argument("--only", choices=("gguf", "legacy", "models"),
                        help="only these rows (gguf: GGUF parse, dump, edit; legacy: 2023 model files to GGUF, "
                             "the real-vocabulary GPT-2 of the ggml examples, and header-heavy ones against a struct "
                             "reader and llama.cpp's converter; models: the PEFT adapter, CLIP and Gemma conversions)")
    args = parser.parse_args()

    compiled(Path(ggfmt.__file__).parent)
    work = Path(tempfile.mkdtemp(prefix="ggfmt-bench-", dir=args.dir))
    rows: list[tuple[str, str, str, str]] = []
    try:
        if args.only == "gguf":
            rows.extend(gguf_rows(work, args.runs))
            args.sizes = []
        if args.only == "models":
            rows.extend(model_rows(work, args.runs, args.peft_mb))
            return _print(rows, args.runs)
        if args.only == "legacy":
            rows.extend(legacy_rows(work, args.runs))
            rows.extend(family_rows(work, args.runs))
            rows.extend(header_rows(work, args.runs))
            return _print(rows, args.runs)
        largest = None
        for size_mb in args.sizes:
            source = work / f"ckpt-{int(size_mb)}mb.bin"
            make_checkpoint(source, size_mb=size_mb)
            actual_mb = source.stat().st_size / 1e6
            out, copy = work / "out.gguf", work / "copy.bin"
            convert = [FMT, "to-gguf", str(source), "-o", str(out), "--quiet"]
            commands: list[tuple[str, list[str], dict[str, str] | None]] = [
                ("cp", ["cp", str(source), str(copy)], None),
                ("to-gguf", convert, None),
                ("cp+sync", ["sh", "-c", 'cp "$0" "$1" && sync "$1"', str(source), str(copy)], None),
                # ggfmt's other way to write (copy_file_range into the page cache, then fsync), for comparison
                ("to-gguf cached", convert, {"GGFMT_DIRECT_IO": "0"}),
            ]
            times: dict[str, list[float]] = {name: [] for name, _, _ in commands}
            rss = []
            for _ in range(args.runs):
                for name, argv, env in commands:
                    drop(copy)
                    drop(out)
                    t, peak = run(argv, env)
                    times[name].append(t)
                    if name == "to-gguf":
                        rss.append(peak)
            drop(copy)
            drop(out)
            median = {name: statistics.median(values) for name, values in times.items()}
            label = f"{actual_mb:,.0f} MB"
            t_ours, t_cp = median["to-gguf"], median["cp"]
            rows.append(row(f"to-gguf wall, {label}", spread(times["to-gguf"]), "", None))
            rows.append(row(f"cp wall, {label}", spread(times["cp"]), "", None))
            rows.append(row(f"to-gguf - cp, {label}", f"{t_ours - t_cp:+.2f} s (x{t_ours / t_cp:.2f})",
                            "<= +0.35 s", t_ours - t_cp <= 0.35))
            rows.append(row(f"cp + sync of the copy, {label}", spread(times["cp+sync"]), "(the durable floor)", None))
            rows.append(row(f"to-gguf, GGFMT_DIRECT_IO=0, {label}", spread(times["to-gguf cached"]),
                            "(page cache + fsync)", None))
            peak_mb = max(rss) / 2**20
            rows.append(row(f"to-gguf peak RSS, {label}", f"{peak_mb:.1f} MiB", "<= 64 MiB", peak_mb <= 64))
            if largest is not None:
                drop(largest)
            largest = source
        if largest is not None:
            parses = [run([FMT, "parse", str(largest)])[0] for _ in range(args.runs)]
            t = statistics.median(parses)
            label = f"{largest.stat().st_size / 1e6:,.0f} MB"
            rows.append(row(f"parse wall, {label}", f"{t:.3f} s", "<= 0.35 s", t <= 0.35))
            drop(largest)
        if args.only == "gguf":
            return _print(rows, args.runs)
        helps = [run([FMT, "--help"])[0] for _ in range(args.runs)]
        t = statistics.median(helps)
        rows.append(row("fmt --help wall", f"{t:.3f} s", "<= 0.25 s", t <= 0.25))

        rows.extend(model_rows(work, args.runs, args.peft_mb))
        rows.extend(legacy_rows(work, args.runs))
        rows.extend(family_rows(work, args.runs))
        rows.extend(header_rows(work, args.runs))
        rows.extend(gguf_rows(work, args.runs))

        like7b = make_checkpoint(work / "like-7b.bin", n_layer=32, n_embd=64, n_vocab=320, n_mult=32)
        # "After start-up": the clock starts once ggfmt's modules and the libraries they use are
        # imported (shown on a row of its own) and runs over loading the schema and parsing.
        probe = ("import time\nt0 = time.perf_counter()\nimport sys, ggfmt, ggfmt.engine\n"
                 "t1 = time.perf_counter()\ndoc = ggfmt.parse(sys.argv[1])\n"
                 "print(t1 - t0, time.perf_counter() - t1, len(doc.tensors))")
        imports, parses = [], []
        for _ in range(args.runs):
            out_text = subprocess.run([sys.executable, "-c", probe, str(like7b)], check=True, capture_output=True,
                                      text=True).stdout.split()
            imports.append(float(out_text[0]))
            parses.append(float(out_text[1]))
        t = statistics.median(parses)
        rows.append(row("import ggfmt.engine (start-up of a parse)", f"{statistics.median(imports):.3f} s", "", None))
        rows.append(row(f"parse 7B-shaped header ({out_text[2]} tensors), after start-up", f"{t:.3f} s",
                        "<= 0.1 s", t <= 0.1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _print(rows, args.runs)


def _print(rows: list[tuple[str, str, str, str]], runs: int) -> int:
    widths = [max(len(r[i]) for r in [("figure", "measured", "target", ""), *rows]) for i in range(4)]
    for r in [("figure", "measured", "target", ""), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"\n(median of {runs} runs; cp and to-gguf alternate; {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
