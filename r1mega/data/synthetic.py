"""Synthetic verifiable tasks for the tiny default run, and pretraining text for its base model.

Tasks (rows are ``{"question", "answer", "task", ...}``, loadable by :func:`r1mega.data.prompts.load_prompts`):

    arithmetic  "What is 347 + 85?" -> "432". Operators ``ops`` from + - *; operand digit counts in
                [min_digits, max_digits] (multiplication's second operand: at most ``mul_max_digits``).
                Scored by r1mega.rewards' ``accuracy`` reward (boxed answer, ``is_equiv``).
    countdown   "Using the numbers [3, 5, 2], create an equation that equals 17 ..." -> a reference
                expression "3*5+2". Many expressions are right and ``is_equiv`` against the reference
                would accept a bare "17", so it needs its own reward: ``"countdown"``
                (:func:`r1mega.rewards.countdown.countdown_reward`, checking with ``countdown_check``).
    code        "Read two integers a and b ... print the value of 3*a - 2*b + 5." -> a Python program,
                judged by running it on the row's ``input_output`` tests (APPS layout, stdin/stdout) in
                the sandbox: the ``code`` reward. ``solution`` holds a reference program; there is no
                ``answer`` (the tests are the reference). Wrong programs in the pretraining text are
                near misses (a coefficient, a sign or the operand order changed) or crash (a
                ValueError on the input line), so a base scores wrong answers and runtime errors.

Generation is deterministic in ``seed``; :func:`make_splits` draws the held-out split first and
the train split from the rest, so no question is in both.

Pretraining text (:func:`pretraining_corpus`): documents "prompt (r1_zero template) + completion",
questions drawn from the same generator but never a held-out question. The completion mix:

    format_rate   share of completions in the R1 format ``<think> steps </think> <answer> \\boxed{x}
                  </answer>``; the rest are unformatted ("steps The answer is x." or just "x").
    correct_rate  share whose final answer is right; the rest carry a plausible wrong answer
                  (off by 1, 10 or 100, or a digit error) at the end of otherwise normal steps.
    recheck_rate  share of the formatted completions that re-verify, in the spirit of R1's reflective
                  re-checks: after the steps, before ``</think>``, "check: <the steps again>" repeated
                  a number of times uniform in ``recheck_times`` (default 3-8). A base sampled at
                  temperature 1 then gives mostly short responses and a few several times longer: a
                  long tail of response lengths (the ``longtail`` tiny preset). Default 0: the corpus
                  is what it was without the knob, byte for byte. Arithmetic and countdown only.

Difficulty knobs, for a ~1-3M-parameter Qwen2 pretrained for minutes (targets, to be confirmed by
the end-to-end run; nothing here measures them): the base model's pass@1 is roughly bounded by
``format_rate * correct_rate`` times its ability to imitate the steps, and RL has room to climb
when formatted-but-wrong and correct-but-unformatted completions are both common. A start:
``ops=("+", "-")``, ``min_digits=1, max_digits=3``, ``format_rate=0.6``, ``correct_rate=0.6``
(base pass@1 ~20-40% expected). Make it harder with ``max_digits`` 4-5 or ``"*"`` (carries and
partial products are what a tiny model gets wrong), easier with ``max_digits=2``. Countdown with
3 numbers <= 20 is harder than 3-digit addition for the same model size.
"""

from __future__ import annotations

import json
import os
import random
from fractions import Fraction
from typing import Iterable, Sequence

from r1mega.data.prompts import DataError, render_prompt

TASKS = ("arithmetic", "countdown", "code")


# ------------------------------------------------------------------------------------- arithmetic

def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1)


def arithmetic_problem(rng: random.Random, *, ops: Sequence[str] = ("+", "-"), min_digits: int = 1,
                       max_digits: int = 3, mul_max_digits: int = 2) -> dict:
    """One arithmetic row: question, answer, and the operands (for worked solutions)."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"min_digits ({min_digits}) must be in [1, max_digits ({max_digits})]")
    bad = [op for op in ops if op not in "+-*"]
    if not ops or bad:
        raise ValueError(f"ops ({list(ops)}) must be a non-empty subset of + - *")
    op = rng.choice(list(ops))
    a = _operand(rng, rng.randint(min_digits, max_digits))
    b = _operand(rng, rng.randint(min_digits, min(max_digits, mul_max_digits) if op == "*" else max_digits))
    result = a + b if op == "+" else a - b if op == "-" else a * b
    return {"question": f"What is {a} {op} {b}?", "answer": str(result), "task": "arithmetic",
            "a": a, "b": b, "op": op}


def _add_steps(a: int, b: int) -> list[str]:
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}, write {s % 10}"
                     + (", carry 1" if s >= 10 else ""))
        carry = s // 10
    if carry:
        steps.append("write the carry 1")
    return steps


def _sub_steps(a: int, b: int) -> list[str]:
    if a < b:
        return [f"{a} < {b}, so compute {b}-{a} and negate"] + _sub_steps(b, a)
    da, db = str(a)[::-1], str(b)[::-1]
    steps, borrow = [], 0
    for i in range(len(da)):
        d, y = int(da[i]), int(db[i]) if i < len(db) else 0
        x, head = d - borrow, f"{d}-1-{y}" if borrow else f"{d}-{y}"
        if x < y:
            steps.append(f"{head}: borrow, {x + 10}-{y}={x + 10 - y}")
            borrow = 1
        else:
            steps.append(f"{head}={x - y}")
            borrow = 0
    return steps


def _mul_steps(a: int, b: int) -> list[str]:
    steps, partial = [], []
    for i, d in enumerate(str(b)[::-1]):
        p = a * int(d) * 10 ** i
        steps.append(f"{a}*{d}" + ("0" * i) + f"={p}")
        partial.append(p)
    if len(partial) > 1:
        steps.append("+".join(map(str, partial)) + f"={sum(partial)}")
    return steps


def arithmetic_steps(row: dict) -> list[str]:
    """Column-by-column worked steps for an arithmetic row (digits right to left)."""
    a, b, op = row["a"], row["b"], row["op"]
    return _add_steps(a, b) if op == "+" else _sub_steps(a, b) if op == "-" else _mul_steps(a, b)


# -------------------------------------------------------------------------------------- countdown

_OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x / y}


def countdown_problem(rng: random.Random, *, num_numbers: int = 3, max_number: int = 20,
                      max_target: int = 100) -> dict:
    """One countdown row: reach ``target`` using each of ``numbers`` exactly once with + - * /.
    Built by combining random pairs (every intermediate a positive integer), so it is solvable."""
    if num_numbers < 2:
        raise ValueError(f"num_numbers ({num_numbers}) must be >= 2")
    for _ in range(1000):
        numbers = [rng.randint(1, max_number) for _ in range(num_numbers)]
        pool = [(Fraction(n), str(n)) for n in numbers]
        steps = []
        while len(pool) > 1:
            (x, ex), (y, ey) = pool.pop(rng.randrange(len(pool))), pool.pop(rng.randrange(len(pool)))
            op = rng.choice([o for o in "+-*/" if (o != "-" or x > y) and (o != "/" or x % y == 0)])
            value = _OPS[op](x, y)
            steps.append(f"{x}{op}{y}={value}")
            pool.append((value, f"({ex}{op}{ey})"))
        target, expr = pool[0]
        if 1 <= target <= max_target:
            expr = expr[1:-1]  # outermost parentheses
            return {"question": f"Using the numbers {numbers}, create an equation that equals {int(target)}. "
                                f"Use + - * / and each number exactly once.",
                    "answer": expr, "task": "countdown", "numbers": numbers, "target": int(target),
                    "steps": steps}
    raise ValueError(f"no countdown problem with target <= {max_target} found "
                     f"(num_numbers={num_numbers}, max_number={max_number})")


# ------------------------------------------------------------------------------------------- code

CODE_READ = "a, b = map(int, input().split())"


def _code_term(coef: int, var: str) -> str:
    return var if coef == 1 else f"{coef}*{var}"


def code_expression(terms: Sequence[tuple[int, str]], op: str, const: int) -> str:
    """``3*a - 2*b + 5`` from ((3, "a"), (2, "b")), "-", 5."""
    (c1, v1), (c2, v2) = terms
    expr = f"{_code_term(c1, v1)} {op} {_code_term(c2, v2)}"
    return expr + (f" + {const}" if const > 0 else f" - {-const}" if const < 0 else "")


def _code_value(terms, op: str, const: int, a: int, b: int) -> int:
    (c1, v1), (c2, v2) = terms
    x, y = c1 * (a if v1 == "a" else b), c2 * (a if v2 == "a" else b)
    return (x + y if op == "+" else x - y) + const


def code_problem(rng: random.Random, *, max_coef: int = 9, max_const: int = 9, max_input: int = 50,
                 n_tests: int = 3) -> dict:
    """One code row: read two integers, print a linear expression of them. Tests are stdin/stdout
    pairs (APPS ``input_output``): ``0 0`` (an edge case every program that runs and prints the
    constant passes: with ``reward.code_scoring: fraction`` it separates a near miss from a crash),
    then random inputs in [-max_input, max_input]. ``terms``, ``op`` and ``const`` are the expression's
    parts (for near misses)."""
    if max_coef < 1 or max_const < 0 or max_input < 1 or n_tests < 1:
        raise ValueError(f"code task knobs must be positive (max_coef={max_coef}, max_const={max_const}, "
                         f"max_input={max_input}, n_tests={n_tests})")
    first = rng.choice("ab")
    terms = [[rng.randint(1, max_coef), first], [rng.randint(1, max_coef), "b" if first == "a" else "a"]]
    op, const = rng.choice("+-"), rng.randint(-max_const, max_const)
    expr = code_expression(terms, op, const)
    inputs, outputs = [], []
    for i in range(n_tests):  # the first test is the edge case 0 0
        a, b = (0, 0) if i == 0 else (rng.randint(-max_input, max_input), rng.randint(-max_input, max_input))
        inputs.append(f"{a} {b}\n")
        outputs.append(f"{_code_value(terms, op, const, a, b)}\n")
    return {"question": f"Read two integers a and b from one line of input and print the value of {expr}.",
            "task": "code", "language": "python", "expression": expr, "terms": terms, "op": op, "const": const,
            "solution": f"{CODE_READ}\nprint({expr})", "input_output": {"inputs": inputs, "outputs": outputs}}


def _wrong_program(rng: random.Random, row: dict) -> str:
    """A near miss of the row's program: a coefficient, the sign or the operands changed (never to
    an expression of the same value), or a crash."""
    kind = rng.choice(["coef", "sign", "swap", "crash"])
    if kind == "crash":  # int() of "3 4" raises ValueError: a runtime error, not a wrong answer
        return f"a, b = int(input()), 0\nprint({row['expression']})"
    terms, op, const = [list(t) for t in row["terms"]], row["op"], row["const"]
    if kind == "coef":
        t = rng.randrange(2)
        terms[t][0] = rng.choice([c for c in range(1, 10) if c != terms[t][0]])
    elif kind == "swap":
        terms = [[c, "b" if v == "a" else "a"] for c, v in terms]
    else:
        op = "-" if op == "+" else "+"
    if all(_code_value(terms, op, const, a, b) == _code_value(row["terms"], row["op"], const, a, b)
           for a, b in ((2, 3), (5, -7))):  # a swap of 2*a + 2*b, say
        const += 1
    return f"{CODE_READ}\nprint({code_expression(terms, op, const)})"


# ------------------------------------------------------------------------------------ splits & io

def generate(task: str, rng: random.Random, **knobs) -> dict:
    """One row of ``task`` (see :data:`TASKS`) from ``rng`` with the task's knobs."""
    if task == "arithmetic":
        return arithmetic_problem(rng, **knobs)
    if task == "countdown":
        return countdown_problem(rng, **knobs)
    if task == "code":
        return code_problem(rng, **knobs)
    raise ValueError(f"unknown synthetic task {task!r}; valid: {', '.join(TASKS)}")


def make_splits(task: str, n_train: int, n_eval: int, *, seed: int = 0, **knobs) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows with distinct questions, deterministic in ``seed``. The held-out rows are
    drawn first, so the eval set does not change with ``n_train``."""
    rng = random.Random(f"r1mega-synthetic:{task}:{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < n_train + n_eval:
        attempts += 1
        if attempts > 50 * (n_train + n_eval) + 1000:
            raise DataError(f"{task}: only {len(rows)} distinct questions found for n_train ({n_train}) + "
                            f"n_eval ({n_eval}); widen the task's knobs ({knobs}) or ask for fewer")
        row = generate(task, rng, **knobs)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    return rows[n_eval:], rows[:n_eval]


def write_jsonl(rows: Iterable[dict], path: str) -> str:
    """Write ``rows`` as JSON lines (the directory is created); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------- pretraining text

def _wrong_answer(rng: random.Random, answer: str) -> str:
    try:
        value = int(answer)
    except ValueError:  # countdown: a wrong expression is any other expression
        return answer.replace("+", "-", 1) if "+" in answer else answer.replace("*", "+", 1) if "*" in answer else answer + "+1"
    if rng.random() < 0.5:
        return str(value + rng.choice([-100, -10, -1, 1, 10, 100]))
    digits = list(str(abs(value)))
    i = rng.randrange(len(digits))
    digits[i] = str((int(digits[i]) + rng.randint(1, 9)) % 10)
    wrong = int("".join(digits)) * (1 if value >= 0 else -1)
    return str(wrong if wrong != value else value + 1)


def code_completion(row: dict, rng: random.Random, *, formatted: bool, correct: bool) -> str:
    """A response to a code row: the plan, then the program in a fenced block."""
    program = row["solution"] if correct else _wrong_program(rng, row)
    block = f"```python\n{program}\n```"
    if formatted:
        return f" <think> read a and b, then print {row['expression']}. </think> <answer> {block} </answer>"
    return f" Read a and b, then print {row['expression']}.\n{block}" if rng.random() < 0.5 else f" {block}"


def check_recheck_knobs(recheck_rate: float, recheck_times: Sequence[int]) -> None:
    """Refuse a ``recheck_rate`` outside [0, 1] or a ``recheck_times`` that is not (lo, hi), 1 <= lo <= hi."""
    if not 0.0 <= recheck_rate <= 1.0:
        raise ValueError(f"recheck_rate ({recheck_rate}) must be in [0, 1]")
    times = tuple(recheck_times)
    if len(times) != 2 or not all(isinstance(t, int) for t in times) or not 1 <= times[0] <= times[1]:
        raise ValueError(f"recheck_times ({list(times)}) must be two integers (lo, hi) with 1 <= lo <= hi")


def completion(row: dict, rng: random.Random, *, formatted: bool, correct: bool, recheck_rate: float = 0.0,
               recheck_times: Sequence[int] = (3, 8)) -> str:
    """A response to ``row``: worked steps then the answer, in the R1 format or not, right or wrong.

    A formatted response re-verifies with probability ``recheck_rate``: after its steps and before
    ``</think>`` it repeats "check: <the steps again>" n times, n uniform in ``recheck_times``
    (inclusive). At rate 0 no random number is drawn, so the text is what it was without the knob."""
    if row["task"] == "code":
        return code_completion(row, rng, formatted=formatted, correct=correct)
    if row["task"] == "arithmetic":
        steps = arithmetic_steps(row)
    else:
        steps = list(row.get("steps", []))
    answer = row["answer"] if correct else _wrong_answer(rng, row["answer"])
    if row["task"] == "arithmetic":
        steps.append(f"so {row['a']}{row['op']}{row['b']}={answer}")
    reasoning = ". ".join(steps) + "."
    if formatted:
        if recheck_rate > 0 and rng.random() < recheck_rate:
            reasoning += f" check: {reasoning}" * rng.randint(*recheck_times)
        return f" <think> {reasoning} </think> <answer> \\boxed{{{answer}}} </answer>"
    return f" {reasoning} The answer is {answer}." if rng.random() < 0.5 else f" {answer}"


def pretraining_corpus(n_docs: int, *, seed: int = 0, task: str = "arithmetic", format_rate: float = 0.5,
                       correct_rate: float = 0.5, exclude: Iterable[str] = (), template: str = "r1_zero",
                       recheck_rate: float = 0.0, recheck_times: Sequence[int] = (3, 8), **knobs) -> list[str]:
    """``n_docs`` documents "prompt + completion" for pretraining the tiny base model; no question in
    ``exclude`` (pass the held-out questions). See the module docstring for the mix and the knobs."""
    for name, rate in (("format_rate", format_rate), ("correct_rate", correct_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} ({rate}) must be in [0, 1]")
    check_recheck_knobs(recheck_rate, recheck_times)
    if recheck_rate > 0 and task == "code":
        raise ValueError(f"recheck_rate ({recheck_rate}) repeats worked steps; the code task has none: set it to 0")
    excluded = set(exclude)
    rng = random.Random(f"r1mega-pretrain:{task}:{seed}")
    docs, attempts = [], 0
    while len(docs) < n_docs:
        attempts += 1
        if attempts > 50 * n_docs + 1000:
            raise DataError(f"{task}: could not draw {n_docs} documents outside the {len(excluded)} excluded "
                            f"questions; widen the task's knobs ({knobs})")
        row = generate(task, rng, **knobs)
        if row["question"] in excluded:
            continue
        formatted, correct = rng.random() < format_rate, rng.random() < correct_rate
        prompt = render_prompt(row["question"], template, code_language=row.get("language"))
        docs.append(prompt + completion(row, rng, formatted=formatted, correct=correct,
                                        recheck_rate=recheck_rate, recheck_times=recheck_times))
    return docs
