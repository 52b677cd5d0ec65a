"""`strop chat`: talk to a base model, a trained adapter folder or a full/merged model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from strop.errors import StropError


def load_for_chat(target: str, trust_remote_code: bool = False):
    """(model, tokenizer) for an alias/hub id/folder; an adapter folder is loaded onto its base."""
    from strop.data.tokenize import ensure_chat_template
    from strop.models import load_adapter, load_model, load_tokenizer, resolve_model_path

    folder = Path(target)
    if (folder / "adapter_config.json").is_file():
        base = _adapter_base(folder)
        model = load_adapter(load_model(resolve_model_path(base), torch.float32, trust_remote_code), folder)
        tokenizer_source = folder if (folder / "tokenizer_config.json").is_file() else resolve_model_path(base)
    else:
        path = resolve_model_path(target, "model")
        model, tokenizer_source = load_model(path, torch.float32, trust_remote_code), path
    tokenizer = load_tokenizer(str(tokenizer_source), trust_remote_code)
    ensure_chat_template(tokenizer)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


def _adapter_base(folder: Path) -> str:
    """The base an adapter was trained on: strop's saved config first, then PEFT's own record."""
    import json

    saved = folder / "strop_config.yml"
    if saved.is_file():
        try:
            config = yaml.safe_load(saved.read_text())
        except yaml.YAMLError as err:
            raise StropError(f"{saved}: not valid YAML: {' '.join(str(err).split())}") from err
        if isinstance(config, dict) and config.get("base_model"):
            return str(config["base_model"])
    try:
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except json.JSONDecodeError as err:
        raise StropError(f"{folder / 'adapter_config.json'}: not valid JSON ({err})") from err
    if not base:
        raise StropError(f"{folder}: neither strop_config.yml nor adapter_config.json says which base model "
                         "the adapter belongs to")
    return base


def _interactive(model, tokenizer, args) -> None:
    from strop.generate import answer

    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    print("strop chat: type a message; /reset clears the history, /exit or Ctrl-D quits.")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text in {"/exit", "/quit"}:
            return
        if text == "/reset":
            history = history[:1] if args.system else []
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        reply = answer(model, tokenizer, [history], args.max_new_tokens, args.temperature)[0]
        print(f"model> {reply}")
        history.append({"role": "assistant", "content": reply})


def _run(args: argparse.Namespace) -> int:
    from strop.generate import answer

    if args.image:
        return _answer_images(args)
    model, tokenizer = load_for_chat(args.model, args.trust_remote_code)
    if args.prompt is None:
        _interactive(model, tokenizer, args)
        return 0
    conversation = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    print(answer(model, tokenizer, [conversation], args.max_new_tokens, args.temperature)[0])
    return 0


def _answer_images(args: argparse.Namespace) -> int:
    """A vision-language model answers one prompt about the --image files."""
    from strop.vlm.generate import answer_images, chat_processor, image_conversation

    if args.prompt is None:
        raise StropError("--image needs --prompt (a question about the image)")
    conversation = image_conversation(args.prompt, args.image, args.system)
    processor = chat_processor(args.model, args.trust_remote_code)
    model, _ = load_for_chat(args.model, args.trust_remote_code)
    print(answer_images(model, processor, [conversation], args.max_new_tokens)[0])
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("chat", help="chat with a model, adapter folder or merged model")
    parser.add_argument("model", help="alias, hub id, model folder, or a training output_dir holding an adapter")
    parser.add_argument("--prompt", help="answer this one message and exit (default: interactive)")
    parser.add_argument("--system", help="system message")
    parser.add_argument("--image", action="append", metavar="FILE", help="image for a vision-language model "
                        "(repeat for several); needs --prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.set_defaults(func=_run)
