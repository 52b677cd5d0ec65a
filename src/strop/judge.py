"""An LLM judge: a model reads a rubric (or constitution), then scores one answer or picks the better of two.

Judging with a strong model (Zheng et al. 2023, "Judging LLM-as-a-judge with MT-Bench") works, with known
biases; position bias (preferring whichever answer comes first) is controlled by asking in both orders
and averaging, so a judge that always says "A" yields 0.5, not a preference. The judge may be any model
strop loads (run locally) or an OpenAI-compatible chat endpoint (`/v1/chat/completions`).

Answers are parsed leniently (`Score: 7`, `7/10`, `[[A]]`, `Winner: B`, `Answer A is better`); an answer
with no score or choice is counted in `unparseable`: a score becomes NaN and a comparison 0.5 (no
preference), so a broken judge shows up in the counts instead of as silent noise.

Protocol shared with evaluation: `compare(prompt, first, second) -> P(first is better)` and
`score(prompt, response) -> float`; `compare_many` / `score_many` batch them.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from strop.errors import StropError

DEFAULT_RUBRIC = (
    "Judge how helpful, correct, honest and harmless the answer is for the user's request. "
    "Prefer answers that are accurate and directly address the request."
)
_SCORE_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]",
        r"score\s*(?:is|of)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)",
        r"(-?\d+(?:\.\d+)?)\s*/\s*\d+",
        r"rating\s*[:=]?\s*(-?\d+(?:\.\d+)?)",
    )
]
_CHOICE_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\[\[\s*([AB])\s*\]\]",
        (
            r"(?:winner|better|choice|verdict|prefer(?:red)?)\s*(?:answer|response)?\s*(?:is)?\s*[:=]?\s*"
            r"\**\s*\(?\b([AB])\b"
        ),
        r"\b(?:answer|response|assistant)\s*\(?([AB])\)?\s+is\s+(?:better|preferred)",
        r"^\s*\(?([AB])\)?[\s.:)]*$",
    )
]

_UNDECIDED = re.compile(r"\b[AB]\s+(?:or|and)\s+[AB]\b|\btie\b", re.IGNORECASE)


def parse_score(text: str, low: float, high: float) -> float | None:
    """The first score in [low, high] found by the patterns in order, else a lone number in range."""
    for pattern in _SCORE_PATTERNS:
        for match in pattern.finditer(text):
            value = float(match.group(1))
            if low <= value <= high:
                return value
    numbers = [float(n) for n in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", text)]
    in_range = [n for n in numbers if low <= n <= high]
    return in_range[0] if len(in_range) == 1 else None


def parse_choice(text: str) -> str | None:
    """ "A" or "B" when the answer names one winner, else None (a tie, "A or B", or no answer)."""
    if _UNDECIDED.search(text):
        return None
    for pattern in _CHOICE_PATTERNS:
        found = {m.group(1).upper() for m in pattern.finditer(text.strip())}
        if len(found) == 1:
            return found.pop()
    return None


def read_rubric(path: str | None) -> str:
    if path is None:
        return DEFAULT_RUBRIC
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise StropError(f"{path}: cannot read the rubric: {err.strerror or err}") from err
    if not text:
        raise StropError(f"{path}: the rubric file is empty")
    return text


class LocalBackend:
    """A model strop loads (alias, hub id, folder, adapter), answering greedily."""

    def __init__(self, target: str, max_new_tokens: int = 64, batch_size: int = 8, model=None, tokenizer=None):
        if model is None:
            from strop.models.saved import load_for_chat

            model, tokenizer = load_for_chat(target)
        self.model, self.tokenizer, self.name = model, tokenizer, target
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def choice_probability(self, prompts: Sequence[str], prefix: str = "Winner:") -> list[float]:
        """P("A") / (P("A") + P("B")) for the token after `prefix` at the start of the reply: a verdict
        read from the logits, which a small judge gives even when its free text follows no format."""
        import torch

        from strop.models.generate import chat_inputs
        from strop.models.loading import eval_mode

        tok = self.tokenizer
        ids = [tok.encode(" A", add_special_tokens=False)[-1], tok.encode(" B", add_special_tokens=False)[-1]]
        device = next(self.model.parameters()).device
        out = []
        with torch.no_grad(), eval_mode(self.model):
            for start in range(0, len(prompts), self.batch_size):
                chunk = [[{"role": "user", "content": p}] for p in prompts[start : start + self.batch_size]]
                inputs = chat_inputs(tok, chunk, device, suffix=prefix)
                logits = self.model(**inputs).logits[:, -1, ids].float()
                out += torch.softmax(logits, dim=-1)[:, 0].tolist()
        return out

    def complete(
        self, prompts: Sequence[str], temperature: float = 0.0, max_new_tokens: int | None = None
    ) -> list[str]:
        from strop.models.generate import answer

        conversations = [[{"role": "user", "content": p}] for p in prompts]
        return answer(
            self.model,
            self.tokenizer,
            conversations,
            max_new_tokens or self.max_new_tokens,
            temperature,
            self.batch_size,
        )


class HttpBackend:
    """An OpenAI-compatible server: POST {url}/chat/completions; the key comes from an environment variable."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        max_new_tokens: int = 64,
        timeout: float = 120.0,
    ):
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.key, self.name = model, os.environ.get(api_key_env), f"{url} ({model})"
        self.max_new_tokens, self.timeout = max_new_tokens, timeout

    def _one(self, prompt: str, temperature: float, max_new_tokens: int) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": max_new_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
            raise StropError(f"judge endpoint {self.url}: {getattr(err, 'reason', err)}") from err
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as err:
            raise StropError(f"judge endpoint {self.url}: the reply has no choices[0].message.content") from err

    def complete(
        self, prompts: Sequence[str], temperature: float = 0.0, max_new_tokens: int | None = None
    ) -> list[str]:
        return [self._one(p, temperature, max_new_tokens or self.max_new_tokens) for p in prompts]


def make_backend(target: str, max_new_tokens: int = 64, endpoint_model: str | None = None):
    """An http(s):// target is an endpoint (serving `endpoint_model`); anything else a local model."""
    if target.startswith(("http://", "https://")):
        return HttpBackend(target, endpoint_model or "default", max_new_tokens=max_new_tokens)
    return LocalBackend(target, max_new_tokens)


class LLMJudge:
    """Pointwise scores on [low, high] and pairwise preferences, from a backend's text answers."""

    def __init__(
        self,
        backend,
        rubric: str = DEFAULT_RUBRIC,
        low: float = 1,
        high: float = 10,
        both_orders: bool = True,
        logprobs: bool = False,
    ):
        if logprobs and not hasattr(backend, "choice_probability"):
            raise StropError(f"judge {backend.name}: verdicts from logits need a local model, not an endpoint")
        self.backend, self.rubric, self.low, self.high, self.both_orders = backend, rubric, low, high, both_orders
        self.logprobs = logprobs
        self.asked = 0
        self.unparseable = 0

    def describe(self) -> dict:
        return {
            "model": self.backend.name,
            "scale": [self.low, self.high],
            "both_orders": self.both_orders,
            "verdict": "logits" if self.logprobs else "text",
            "asked": self.asked,
            "unparseable": self.unparseable,
        }

    def _ask(self, prompts: list[str]) -> list[str]:
        self.asked += len(prompts)
        return self.backend.complete(prompts)

    def score_prompt(self, prompt: str, response: str) -> str:
        return (
            f"{self.rubric}\n\n[Question]\n{prompt}\n\n[Answer]\n{response}\n\n"
            f"Rate the answer from {self.low:g} to {self.high:g}. Reply in the form: Score: <number>"
        )

    def compare_prompt(self, prompt: str, a: str, b: str) -> str:
        return (
            f"{self.rubric}\n\n[Question]\n{prompt}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}\n\n"
            "Which answer is better? Reply in the form: Winner: A  or  Winner: B"
        )

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        scores = []
        for text in self._ask([self.score_prompt(p, r) for p, r in pairs]):
            value = parse_score(text, self.low, self.high)
            self.unparseable += value is None
            scores.append(math.nan if value is None else value)
        return scores

    def score(self, prompt: str, response: str) -> float:
        return self.score_many([(prompt, response)])[0]

    def compare_many(self, triples: Sequence[tuple[str, str, str]]) -> list[float]:
        """P(first better) per (prompt, first, second): the mean over orders of the parsed verdicts."""
        asks = [self.compare_prompt(p, a, b) for p, a, b in triples]
        if self.both_orders:
            asks += [self.compare_prompt(p, b, a) for p, a, b in triples]
        if self.logprobs:
            self.asked += len(asks)
            p_a = self.backend.choice_probability(asks)
            n = len(triples)
            return [(p_a[i] + 1 - p_a[n + i]) / 2 if self.both_orders else p_a[i] for i in range(n)]
        verdicts = [parse_choice(text) for text in self._ask(asks)]
        self.unparseable += sum(v is None for v in verdicts)
        n = len(triples)
        out = []
        for i in range(n):
            votes = [1.0 if verdicts[i] == "A" else 0.0] if verdicts[i] else []
            if self.both_orders and verdicts[n + i]:
                votes.append(1.0 if verdicts[n + i] == "B" else 0.0)
            out.append(sum(votes) / len(votes) if votes else 0.5)
        return out

    def compare(self, prompt: str, first: str, second: str) -> float:
        return self.compare_many([(prompt, first, second)])[0]
