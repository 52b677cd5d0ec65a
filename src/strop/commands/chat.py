"""`strop chat`: talk to a base model, a trained adapter folder or a full/merged model folder."""

from __future__ import annotations

import argparse

from strop.errors import StropError
from strop.models.generate import answer
from strop.models.saved import load_for_chat


def _interactive(model, tokenizer, args) -> None:
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
    if args.image:
        return _answer_images(args)
    model, tokenizer = load_for_chat(args.model, args.trust_remote_code)
    if args.prompt is None:
        _interactive(model, tokenizer, args)
        return 0
    conversation = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
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
    parser.add_argument(
        "--image",
        action="append",
        metavar="FILE",
        help="image for a vision-language model (repeat for several); needs --prompt",
    )
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.set_defaults(func=_run)
