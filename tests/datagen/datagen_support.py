"""Helpers of the datagen tests: write_jsonl, and a local OpenAI-compatible judge server with a fixed, predictable taste: the longer answer wins."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def longer_wins(prompt: str) -> str:
    """The judge's rule: pairwise, the longer answer; pointwise, 1 + length mod 10."""
    if "[Answer A]" in prompt:
        a = prompt.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0]
        b = prompt.split("[Answer B]\n")[1].split("\n\nWhich")[0]
        return "Winner: A" if len(a) > len(b) else "Winner: B" if len(b) > len(a) else "It is a tie."
    answer = prompt.split("[Answer]\n")[1].split("\n\nRate")[0]
    return f"Score: {1 + len(answer) % 10}"


class JudgeHandler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeHandler.seen.append((self.path, self.headers.get("Authorization"), body))
        content = longer_wins(body["messages"][0]["content"])
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@contextmanager
def serving_judge() -> Iterator[str]:
    """The server's base URL while the block runs."""
    JudgeHandler.seen.clear()
    server = HTTPServer(("127.0.0.1", 0), JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
