"""`math`: 1.0 when the completion's final answer equals the row's reference answer, else 0.0.

Extraction (first that applies): the last `\\boxed{...}` (nested braces kept), else the text after the
last "answer is" / "Answer:" up to the end of its line or sentence, else the last number in the text.
The reference (option `field`, default "answer") may be a number or a string; a GSM8K-style
"... #### 72" or a reference with its own `\\boxed{}` is reduced to that final part first.

Comparison, first that succeeds: the normalised texts are equal (case and spaces ignored); both are
numbers within a relative `tolerance` ("3/4", "0.75", "\\frac{3}{4}", "1,000", "$5", "50%" as 50); both
parse as expressions that sympy simplifies to the same thing ("x+1" and "1+x"), constants compared by
value within the tolerance ("\\pi/2" and "1.5707963"). "answer is 42 apples" falls back to the
phrase's first number.

Safety: sympy's parse_expr ends in `eval`, and simplify can run for ever on towers of powers, so only
200 characters of a small alphabet (digits, single-letter symbols, + - * / ^ ( ) and a few function
names) reach it, and powers whose constant exponent is not a plain number, or exceeds 1000 (12 over a
symbolic base), are refused before simplify.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import Field

from strop.rl.rewards.base import Options, RewardType, per_completion, row_field

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1000
MAX_SYMBOLIC_EXPONENT = 12
FUNCTIONS = ("sqrt", "sin", "cos", "tan", "log", "exp", "pi")
_LATEX_WORDS = {
    r"\cdot": "*",
    r"\times": "*",
    r"\div": "/",
    r"\pi": "pi",
    r"\ln": "log",
    r"\log": "log",
    r"\sin": "sin",
    r"\cos": "cos",
    r"\tan": "tan",
    r"\exp": "exp",
}
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?|answer\s*:", re.IGNORECASE)
_FRACTION = re.compile(r"^(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)$")
_LATEX_FRACTION = re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$")


class MathOptions(Options):
    field: str = Field("answer", description="Row field holding the reference answer.")
    tolerance: float = Field(1e-6, ge=0, description="Relative tolerance for numeric answers.")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the brace group opening at `text[start]`, and the index after it."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1 : index], index + 1
    return None


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind(r"\boxed"), text.rfind(r"\fbox"))
    if start < 0:
        return None
    rest = text[start + (6 if text.startswith(r"\boxed", start) else 5) :].lstrip()
    if rest.startswith("{"):
        group = _braced(rest, 0)
        return group[0] if group else None
    tokens = rest.split()  # "\boxed 5": the next token
    return tokens[0].strip("$") if tokens else None


def extract_answer(text: str) -> str | None:
    """The completion's final answer (see the module docstring), or None when there is none."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    markers = list(_ANSWER_IS.finditer(text))
    if markers:
        line = text[markers[-1].end() :].split("\n", 1)[0]
        phrase = re.split(r"\.(?:\s|$)", line.strip(), maxsplit=1)[0]
        if phrase.strip():
            return phrase
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def reference_answer(value: object) -> str:
    text = str(value)
    if "####" in text:
        return text.rsplit("####", 1)[1]
    return _last_boxed(text) or text


def normalize(text: str) -> str:
    text = re.sub(r"\\(?:text|mathrm|textbf|mbox)\{([^{}]*)\}", r"\1", text)
    for old, new in (
        (r"\dfrac", r"\frac"),
        (r"\tfrac", r"\frac"),
        (r"\left", ""),
        (r"\right", ""),
        (r"\!", ""),
        (r"\,", ""),
        (r"\;", ""),
        (r"\%", ""),
        (r"\$", ""),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("°", ""),
        ("$", ""),
        ("%", ""),
    ):
        text = text.replace(old, new)
    text = text.rsplit("=", 1)[-1]
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    return " ".join(text.split()).strip("*").strip().rstrip(".").strip()


def to_number(text: str) -> float | None:
    compact = text.replace(" ", "")
    try:
        value = float(compact)
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    if match := _FRACTION.match(compact):
        return float(match[1]) / float(match[2]) if float(match[2]) else None
    if match := _LATEX_FRACTION.match(compact):
        sign = -1.0 if match[1] else 1.0
        return sign * float(match[2]) / float(match[3]) if float(match[3]) else None
    return None


def _latex_to_plain(text: str) -> str | None:
    """LaTeX fractions, roots and operators as plain expression text; None if other LaTeX remains."""
    for command, function in ((r"\frac", None), (r"\sqrt", "sqrt")):
        while (start := text.find(command + "{")) >= 0:
            first = _braced(text, start + len(command))
            if first is None:
                return None
            if function:
                text = f"{text[:start]}{function}({first[0]}){text[first[1] :]}"
                continue
            second = _braced(text, first[1]) if text[first[1] : first[1] + 1] == "{" else None
            if second is None:
                return None
            text = f"{text[:start]}(({first[0]})/({second[0]})){text[second[1] :]}"
    for word, plain in _LATEX_WORDS.items():
        text = text.replace(word, f" {plain} ")
    text = text.replace("{", "(").replace("}", ")")
    return None if "\\" in text else text


def to_expression(text: str):
    """A sympy expression for `text`, or None when it is not a small, safe, parseable expression."""
    plain = _latex_to_plain(text)
    if plain is None or len(plain) > MAX_EXPRESSION_CHARS or not re.fullmatch(r"[0-9A-Za-z+\-*/^().\s]+", plain):
        return None
    if re.search(r"\.(?!\d)", plain):  # a dot outside a decimal is attribute access: "pi.n(10**6)"
        return None
    if any(len(name) > 1 and name not in FUNCTIONS for name in re.findall(r"[A-Za-z]+", plain)):
        return None
    import sympy
    from sympy.parsing.sympy_parser import auto_number, auto_symbol, convert_xor, implicit_multiplication, parse_expr

    constructors = ("Add", "Mul", "Pow", "Integer", "Float", "Rational", "Symbol")
    names = {name: getattr(sympy, name) for name in (*constructors, *FUNCTIONS)}
    try:
        expression = parse_expr(
            plain,
            local_dict={},
            global_dict=names,
            evaluate=False,
            transformations=(auto_symbol, auto_number, convert_xor, implicit_multiplication),
        )
    except Exception:
        return None
    for power in sympy.preorder_traversal(expression):
        if isinstance(power, sympy.Pow) and not power.exp.free_symbols:
            limit = MAX_SYMBOLIC_EXPONENT if power.base.free_symbols else MAX_EXPONENT
            if not power.exp.is_Number or abs(power.exp) > limit:
                return None
    return expression if isinstance(expression, sympy.Expr) else None


def _same_expression(answer: str, reference: str, tolerance: float) -> bool:
    import sympy

    left, right = to_expression(answer), to_expression(reference)
    if left is None or right is None:
        return False
    if not left.free_symbols and not right.free_symbols:  # constants such as pi/2 or sqrt(2): compare values
        return math.isclose(float(left.evalf()), float(right.evalf()), rel_tol=tolerance, abs_tol=1e-12)
    difference = sympy.simplify(left - right)
    return difference == 0 or difference.is_zero is True


def equivalent(answer: str, reference: str, tolerance: float = 1e-6) -> bool:
    """Whether two answers mean the same value (see the module docstring)."""
    answer, reference = normalize(answer), normalize(reference)
    if not answer or not reference:
        return False
    if answer.replace(" ", "").casefold() == reference.replace(" ", "").casefold():
        return True
    left, right = to_number(answer), to_number(reference)
    if left is not None and right is not None:
        return math.isclose(left, right, rel_tol=tolerance, abs_tol=1e-12)
    try:
        return _same_expression(answer, reference, tolerance)
    except Exception:  # sympy can fail in many ways on odd input; none of them means "equal"
        return False


def build(options: MathOptions, base_dir: Path | None):
    def score_one(prompt, completion: str, row: dict) -> float:
        reference = reference_answer(row_field(row, options.field, "math"))
        answer = extract_answer(completion)
        if answer is None:
            return 0.0
        if equivalent(answer, reference, options.tolerance):
            return 1.0
        first = _NUMBER.search(answer)
        return float(first is not None and first[0] != answer and equivalent(first[0], reference, options.tolerance))

    return per_completion(score_one)


REWARD = RewardType(MathOptions, build)
