"""Evaluation metrics over k sampled responses per prompt, as DeepSeek-R1 (2501.12948) reports
them from k samples per problem at temperature 0.6 and top-p 0.95. Pure Python.

    pass@1     mean over prompts of the share of correct samples (R1's pass@1 = 1/k sum_i p_i).
    pass@k     unbiased estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on
               Code", 2107.03374): with n samples of which c are correct,
               pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i).
    cons@k     consensus (majority vote) over the k samples: the extracted final answers are
               grouped into equivalence classes by the verifier (r1mega.rewards' ``is_equiv``), not
               by string, so ``\\frac{6}{2}``, ``3.0`` and ``x = 3`` are one vote for 3; an empty
               (None or blank) answer does not vote; the largest class wins, a tie going to the class
               whose first member came first among the samples; the prompt counts as solved when the
               winner is equivalent to the reference (a prompt whose samples have no answer at
               all is unsolved). Each new answer is compared with each class's first member.
               ``summarize`` also reports it as ``maj@k``, its former name (``r1mega tiny``'s
               summary, the recipes and their committed results read that key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c ({c}) <= n ({n}) and 1 <= k ({k}) <= n ({n})")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def pass_at_1_mean(correct_matrix: Sequence[Sequence[bool]]) -> float:
    """Mean over prompts of (correct samples / samples); one row per prompt."""
    if not correct_matrix or any(len(row) == 0 for row in correct_matrix):
        raise ValueError("pass_at_1_mean needs at least one prompt and one sample per prompt")
    return sum(sum(map(bool, row)) / len(row) for row in correct_matrix) / len(correct_matrix)


def _default_equiv(a: str, b: str) -> bool:
    from r1mega.rewards.math_verify import is_equiv

    return is_equiv(a, b)


def majority_answer(answers: Sequence[str | None],
                    equiv: Callable[[str, str], bool] | None = None) -> str | None:
    """The most frequent answer (grouped by ``equiv``, default r1mega.rewards' ``is_equiv``); a tie
    goes to the group whose first member came first in ``answers``; None when no answer."""
    equiv = equiv or _default_equiv
    groups: list[list[str]] = []  # in order of first appearance
    for ans in answers:
        if ans is None or not str(ans).strip():
            continue
        ans = str(ans).strip()
        for g in groups:
            if ans == g[0] or equiv(ans, g[0]):
                g.append(ans)
                break
        else:
            groups.append([ans])
    if not groups:
        return None
    best = max(len(g) for g in groups)
    return next(g[0] for g in groups if len(g) == best)


def majority_vote(answers: Sequence[str | None], correct_fn: Callable[[str], bool],
                  equiv: Callable[[str, str], bool] | None = None) -> bool:
    """cons@k of one prompt: whether the majority answer (see :func:`majority_answer`) is correct;
    False when every answer is None."""
    winner = majority_answer(answers, equiv)
    return winner is not None and bool(correct_fn(winner))


@dataclass(kw_only=True)
class PromptResult:
    """The evaluation of one prompt's k samples."""

    correct: list[bool]
    """Per sample: was the response correct (the accuracy reward == 1)."""
    answers: list[str | None] | None = None
    """Per sample: the extracted final answer (for cons@k)."""
    reference: str | None = None
    """Reference answer: cons@k compares the majority answer with it (``is_equiv``)."""
    response_lens: list[int] | None = None
    """Per sample: response length in tokens."""
    greedy_correct: bool | None = None
    """Correctness of the greedy (temperature 0) response, when one was generated."""
    scoring_errors: int = 0
    """Responses (sampled or greedy) whose reward failed or timed out (e.g. the code sandbox could
    not start): counted as not correct, and reported, since such a number is not the model's."""
    rewards: list[float] | None = None
    """Per sample: the training reward (``reward.weights``' weighted sum of the rule rewards)."""
    reward_parts: list[dict[str, float]] | None = None
    """Per sample: each weighted rule reward's own (unweighted) score, by name."""


def summarize(results: Sequence[PromptResult],
              equiv: Callable[[str, str], bool] | None = None) -> dict[str, float]:
    """Aggregate metrics: ``prompts``, ``samples``, ``k`` (fewest samples of any prompt), ``pass@1``
    (mean), ``pass@k`` (unbiased, at that k), ``cons@k`` (over prompts with answers and a
    reference; also as ``maj@k``, its former name), ``greedy_acc`` (over prompts with a greedy
    result), ``mean_response_len``, ``scoring_errors`` (responses whose reward failed: a count,
    always present), ``reward`` (the held-out training reward: per prompt the mean over its samples,
    then the mean over prompts, as pass@1) and ``reward/<name>`` (each rule reward's score, the same
    way); a metric with no data is left out."""
    if not results:
        raise ValueError("summarize needs at least one prompt result")
    k = min(len(r.correct) for r in results)
    out: dict[str, float] = {
        "prompts": len(results),
        "samples": sum(len(r.correct) for r in results),
        "k": k,
        "pass@1": pass_at_1_mean([r.correct for r in results]),
        "pass@k": sum(pass_at_k(len(r.correct), sum(map(bool, r.correct)), k) for r in results) / len(results),
    }
    equiv = equiv or _default_equiv
    voted = [r for r in results if r.answers is not None and r.reference is not None]
    if voted:
        out["cons@k"] = out["maj@k"] = sum(majority_vote(r.answers, lambda a, ref=r.reference: equiv(a, ref),
                                                         equiv) for r in voted) / len(voted)
    greedy = [r.greedy_correct for r in results if r.greedy_correct is not None]
    if greedy:
        out["greedy_acc"] = sum(map(bool, greedy)) / len(greedy)
    lens = [n for r in results if r.response_lens for n in r.response_lens]
    if lens:
        out["mean_response_len"] = sum(lens) / len(lens)
    out["scoring_errors"] = sum(r.scoring_errors for r in results)
    scored = [r.rewards for r in results if r.rewards]
    if scored:
        out["reward"] = sum(sum(rs) / len(rs) for rs in scored) / len(scored)
    parts = [r.reward_parts for r in results if r.reward_parts]
    for name in sorted({k for ps in parts for p in ps for k in p}):
        per_prompt = [[p[name] for p in ps if name in p] for ps in parts]
        per_prompt = [v for v in per_prompt if v]
        out[f"reward/{name}"] = sum(sum(v) / len(v) for v in per_prompt) / len(per_prompt)
    return out
