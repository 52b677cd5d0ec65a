"""`strop export` (HF folder -> GGUF + Ollama Modelfile, or a GPTQ/AWQ 4-bit folder) and `strop merge-lora`
(adapter -> full model)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from strop.errors import StropError
from strop.export.bundle import export_model, human_size
from strop.export.gguf_export import QTYPES
from strop.export.quantize import FORMATS


def _run_quantized(args: argparse.Namespace) -> int:
    """GPTQ/AWQ: calibrate, write the compressed-tensors folder, then print the quality check."""
    from transformers import AutoTokenizer

    from strop.export.calibration import read_texts, split_held_out
    from strop.export.quant_check import compare
    from strop.export.quantize import export_quantized, import_llmcompressor
    from strop.models import resolve_model_path

    if args.gguf or not args.modelfile or args.temperature is not None:
        raise StropError(f"--gguf, --no-modelfile and --temperature are GGUF options, not for --format {args.format}")
    if not args.calibration:
        raise StropError(f"--format {args.format} needs --calibration FILE (prompts like the ones the model will get)")
    import_llmcompressor()  # before minutes of work, and before a model is converted
    model_dir = Path(resolve_model_path(args.model_dir, "MODEL_DIR"))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = read_texts(args.calibration, tokenizer)
    if args.eval:
        held = read_texts(args.eval, tokenizer, "--eval")
    else:
        texts, held = split_held_out(texts)
    texts = texts[: args.samples]
    out = Path(args.out) if args.out else Path(f"{args.model_dir.rstrip('/')}-{args.format}")
    result = export_quantized(model_dir, out, args.format, texts, args.group_size, args.max_length)
    print(
        f"{args.format.upper()} int4 (group size {result.group_size}, {result.samples} calibration texts): "
        f"{result.path}  {human_size(result.size_bytes)}  in {result.seconds:.1f} s"
    )
    print(compare(model_dir, result.path, held, args.max_length).line())
    return 0


def _run_export(args: argparse.Namespace) -> int:
    if args.format != "gguf":
        return _run_quantized(args)
    if args.calibration or args.eval or args.group_size is not None:
        raise StropError("--calibration, --eval and --group-size are for --format gptq or awq")
    model_dir = Path(args.model_dir)
    params = {"temperature": args.temperature} if args.temperature is not None else {}
    qtype = args.gguf or "f16"
    result, modelfile = export_model(model_dir, qtype, Path(args.out) if args.out else None, args.modelfile, params)
    print(f"GGUF ({result.qtype}): {result.path}  {human_size(result.size_bytes)}  in {result.seconds:.1f} s")
    if modelfile:
        print(f"Modelfile: {modelfile}")
        print(f"  ollama create {model_dir.resolve().name} -f {modelfile}")
    return 0


def _merge_paths(args: argparse.Namespace) -> tuple[Path, Path, Path, bool | None]:
    """(base, adapter, out, qlora) from a training config and/or the explicit flags (flags win)."""
    base, adapter, out, qlora = args.base, args.adapter, args.out, (True if args.qlora else None)
    if args.config:
        from strop.config import load_config

        cfg, _ = load_config(args.config)
        base = base or cfg.base_model
        adapter = adapter or cfg.output_dir
        out = out or str(Path(cfg.output_dir) / "merged")
    if not (base and adapter and out):
        raise StropError("merge-lora needs a training CONFIG.yml, or all of --base, --adapter and --out")
    try:
        from strop.models import resolve_model_path
    except ImportError:
        resolved = base
    else:
        resolved = resolve_model_path(str(base), "--base")
    if not Path(resolved).is_dir():
        raise StropError(
            f"base model {base!r} is not a local model folder; download it first (merge-lora works offline)"
        )
    return Path(resolved), Path(adapter), Path(out), qlora


def _run_merge(args: argparse.Namespace) -> int:
    from strop.export.merge_lora import merge_lora

    base, adapter, out, qlora = _merge_paths(args)
    start = time.perf_counter()
    merged = merge_lora(base, adapter, out, qlora=qlora)
    print(f"merged {adapter} into {base}: {merged}  ({time.perf_counter() - start:.1f} s)")
    print(f"  export it with: strop export {merged} --gguf q4_k_m")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `export` and `merge-lora`."""
    export = subparsers.add_parser(
        "export",
        help="write a GGUF file (llama.cpp / Ollama), or a GPTQ/AWQ 4-bit model (vLLM / transformers)",
        description="Convert a Hugging Face model folder (a full fine-tune or a merged LoRA) to GGUF, or "
        "quantize it to a GPTQ or AWQ int4 folder in the compressed-tensors format.",
    )
    export.add_argument("model_dir", metavar="MODEL_DIR", help="HF model folder (config.json, safetensors, tokenizer)")
    export.add_argument(
        "--format",
        default="gguf",
        choices=("gguf", *FORMATS),
        help="gguf (default), or gptq / awq: 4-bit weights calibrated on --calibration (needs strop[quant])",
    )
    export.add_argument(
        "--gguf",
        choices=QTYPES,
        metavar="QTYPE",
        help=f"GGUF type: {', '.join(QTYPES)} (default f16; K-quants need strop[gguf])",
    )
    export.add_argument(
        "--out",
        help="output .gguf path (default MODEL_DIR/<name>-<qtype>.gguf); for gptq/awq a folder (default MODEL_DIR-<format>)",
    )
    export.add_argument(
        "--calibration",
        metavar="FILE",
        help="gptq/awq: texts to calibrate on: .txt (one per paragraph) or .jsonl/.json/.parquet/.csv rows",
    )
    export.add_argument(
        "--eval",
        metavar="FILE",
        help="gptq/awq: held-out texts for the quality check (default: every tenth calibration text, kept out)",
    )
    export.add_argument("--group-size", type=int, help="gptq/awq: weights per scale (default 128, or 64/32 to fit)")
    export.add_argument("--samples", type=int, default=128, help="gptq/awq: calibration texts used (default 128)")
    export.add_argument("--max-length", type=int, default=512, help="gptq/awq: tokens per text (default 512)")
    export.add_argument(
        "--modelfile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write an Ollama Modelfile next to the GGUF (default on)",
    )
    export.add_argument("--temperature", type=float, help="PARAMETER temperature in the Modelfile")
    export.set_defaults(func=_run_export)

    merge = subparsers.add_parser(
        "merge-lora",
        help="merge a LoRA adapter into its base model",
        description="Fold a LoRA adapter into the base weights and save a standalone HF model folder.",
    )
    merge.add_argument(
        "config",
        nargs="?",
        metavar="CONFIG.yml",
        help="training config: base = base_model, adapter = output_dir, out = output_dir/merged",
    )
    merge.add_argument("--base", help="base model (folder, GGUF file or alias); overrides the config")
    merge.add_argument("--adapter", help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    merge.add_argument("--out", help="where the merged model goes")
    merge.add_argument(
        "--qlora",
        action="store_true",
        help="the adapter was trained on a 4-bit base (detected from strop_config.yml otherwise)",
    )
    merge.set_defaults(func=_run_merge)
