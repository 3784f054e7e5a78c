"""The code reward on hand-written tasks of each test layout (APPS/TACO stdio and call tests,
LiveCodeBench stdin and functional, CodeContests), in Python and C++: right, wrong, partially
right, runtime error, compile error and timeout; the output comparison rule; infrastructure
failures surfaced as errors, never as a wrong program."""

from __future__ import annotations

import json

import pytest

from r1mega.rewards.code import SandboxInfrastructureError, code_reward, extract_code
from r1mega.rewards.code_tests import CodeTestError, outputs_match, load_code_tests, values_match
from r1mega.rewards.config import RewardConfig
from tests.sandbox_support import needs_userns

CFG = RewardConfig(weights={"code": 1.0}, timeout_s=60, code_test_time_s=1.0)
FRACTION = RewardConfig(weights={"code": 1.0}, timeout_s=60, code_test_time_s=1.0, code_scoring="fraction")

APPS_STDIO = {"input_output": json.dumps({"inputs": ["1 2\n", "5 7\n", "-4 4\n"], "outputs": ["3\n", "12\n", "0\n"]})}
APPS_CALL = {"input_output": {"inputs": [[[3, 1, 2]], [[5]], [[]]], "outputs": [[[1, 2, 3]], [5], [[]]]},
             "fn_name": "sort_list"}
LCB_STDIN = {"public_test_cases": json.dumps([
    {"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"},
    {"input": "2\n10 -3\n", "output": "7", "testtype": "stdin"}])}
LCB_FUNCTIONAL = {"public_test_cases": [
    {"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]", "testtype": "functional"},
    {"input": "[3, 2, 4]\n6", "output": "[1, 2]", "testtype": "functional"}], "func_name": "twoSum"}
CODECONTESTS = {"public_tests": {"input": ["2\n", "3\n"], "output": ["1.41421356\n", "1.7320508\n"]},
                "private_tests": {"input": ["4\n"], "output": ["2.0\n"]}}


def answer(code: str, lang: str = "python") -> str:
    return f"<think>let me write it</think> Here is my solution:\n```{lang}\n{code}\n```"


SUM_PY = "a, b = map(int, input().split())\nprint(a + b)"
SUM_CPP = "#include <iostream>\nint main(){ long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }"


@needs_userns
@pytest.mark.parametrize("meta,code,lang,cfg,score", [
    # APPS / TACO stdin
    (APPS_STDIO, SUM_PY, "python", CFG, 1.0),
    (APPS_STDIO, "a, b = map(int, input().split())\nprint(a * b)", "python", CFG, 0.0),             # wrong
    (APPS_STDIO, "a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)", "python", FRACTION, 2 / 3),
    (APPS_STDIO, "a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)", "python", CFG, 0.0),
    (APPS_STDIO, "raise SystemExit(input()[5])", "python", CFG, 0.0),                                # runtime error
    (APPS_STDIO, "while True: pass", "python", CFG, 0.0),                                            # timeout
    (APPS_STDIO, SUM_CPP, "cpp", CFG, 1.0),
    (APPS_STDIO, "int main() { return 0 }", "cpp", CFG, 0.0),                                        # compile error
    # APPS call tests
    (APPS_CALL, "def sort_list(xs):\n    return sorted(xs)", "python", CFG, 1.0),
    (APPS_CALL, "def sort_list(xs):\n    return xs", "python", FRACTION, 2 / 3),
    (APPS_CALL, "def sort_list(xs):\n    return xs[10]", "python", CFG, 0.0),                        # runtime error
    # LiveCodeBench
    (LCB_STDIN, "input()\nprint(sum(map(int, input().split())))", "python", CFG, 1.0),
    (LCB_STDIN, "input()\nprint(max(map(int, input().split())))", "python", FRACTION, 0.0),
    (LCB_FUNCTIONAL, "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
                     "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
                     "                return [seen[target - x], i]\n            seen[x] = i", "python", CFG, 1.0),
    (LCB_FUNCTIONAL, "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]", "python",
     FRACTION, 0.5),
    # CodeContests, floats within 1e-5
    (CODECONTESTS, "import math\nprint(math.sqrt(int(input())))", "python", CFG, 1.0),
    (CODECONTESTS, "#include <cmath>\n#include <cstdio>\nint main(){ int n; scanf(\"%d\", &n); printf(\"%.9f\\n\", "
                   "std::sqrt((double)n)); }", "cpp", CFG, 1.0),
    (CODECONTESTS, "import math\nprint(round(math.sqrt(int(input())), 2))", "python", FRACTION, 1 / 3),
])
def test_code_reward(meta, code, lang, cfg, score):
    got = code_reward(answer(code, lang), None, meta, cfg)
    assert got.score == pytest.approx(score), got.info


@needs_userns
def test_failures_are_named():
    assert code_reward(answer("while True: pass"), None, APPS_STDIO, CFG).info["first_failure"] == "test 0: timeout"
    bad = code_reward(answer("int main() { return 0 }", "cpp"), None, APPS_STDIO, CFG).info
    assert bad["reason"] == "compile error" and "error" in bad["compiler"]
    crash = code_reward(answer("raise SystemExit(input()[5])"), None, APPS_STDIO, CFG).info
    assert crash["first_failure"].startswith("test 0: runtime error")
    assert code_reward("no code here", None, APPS_STDIO, CFG).info["reason"] == "no code block"
    assert code_reward("<think>```python\nprint(3)\n```", None, APPS_STDIO, CFG).info["reason"] == "reasoning not closed"


@needs_userns
def test_budget_stops_the_remaining_tests():
    cfg = RewardConfig(weights={"code": 1.0}, timeout_s=60, code_test_time_s=1.0, code_budget_s=1.5,
                       code_scoring="fraction")
    got = code_reward(answer("import time\ntime.sleep(0.8)\nprint(sum(map(int, input().split())))"), None,
                      APPS_STDIO, cfg)
    assert got.info["passed"] < 3 and got.info["budget_exhausted"], got.info


def test_missing_sandbox_is_an_infrastructure_error_not_a_zero(monkeypatch, tmp_path):
    monkeypatch.setenv("R1MEGA_SANDBOX_BIN", str(tmp_path / "missing"))
    monkeypatch.setattr("r1mega.sandbox.run.os.path.dirname", lambda p: str(tmp_path))  # hide the built one too
    with pytest.raises(SandboxInfrastructureError, match="not built"):
        code_reward(answer(SUM_PY), None, APPS_STDIO, CFG)


def test_infrastructure_errors_reach_the_scorer_as_errors(monkeypatch, tmp_path):
    from r1mega.rewards.registry import REWARDS
    from r1mega.rewards.scorer import evaluate

    monkeypatch.setenv("R1MEGA_SANDBOX_BIN", str(tmp_path / "missing"))
    monkeypatch.setattr("r1mega.sandbox.run.os.path.dirname", lambda p: str(tmp_path))
    out = evaluate({"code": REWARDS["code"]}, answer(SUM_PY), None, APPS_STDIO, CFG)
    assert "SandboxInfrastructureError" in out["errors"]["code"] and "code" not in out["scores"]


def test_extract_code_takes_the_last_block():
    text = "First try:\n```python\nprint(1)\n```\nBetter:\n```cpp\nint main(){}\n```\nDone."
    assert extract_code(text) == ("cpp", "int main(){}\n")
    assert extract_code("```\nx = 1\n```") == ("", "x = 1\n")
    assert extract_code("no fence") is None


@pytest.mark.parametrize("got,want,ok", [
    ("3\n", "3", True), ("3", "3\n\n", True), ("1 2  \r\n3\n", "1 2\n3", True), ("1.0", "1", True),
    ("1.000001", "1", True), ("1.0001", "1", False), ("100000.5", "100000", True),  # relative for large
    ("YES", "yes", False), ("1 2", "1\n2", False), ("", "0", False), ("3\n4", "3", False), ("nan", "nan", True),
    ("inf", "1e309", False),
])
def test_output_comparison_rule(got, want, ok):
    assert outputs_match(got, want, 1e-5) is ok


def test_return_value_comparison():
    assert values_match([1, 2], [1, 2]) and values_match((1, 2), [1, 2]) and values_match(3, [3])
    assert values_match(0.1 + 0.2, 0.3) and not values_match(True, 1) and not values_match([1], [1, 2])
    assert values_match({"a": [1.0]}, {"a": [1]}) and not values_match("1", 1)


def test_test_layouts_and_their_errors():
    assert [t.kind for t in load_code_tests(APPS_STDIO)] == ["stdio"] * 3
    assert load_code_tests(APPS_CALL)[0].input == [[3, 1, 2]]
    assert load_code_tests(LCB_FUNCTIONAL)[1].input == [[3, 2, 4], 6]
    assert len(load_code_tests(CODECONTESTS)) == 3
    with pytest.raises(CodeTestError, match="no tests"):
        load_code_tests({"question": "x"})
    with pytest.raises(CodeTestError, match="not valid JSON"):
        load_code_tests({"input_output": "{bad"})
    with pytest.raises(CodeTestError, match="2 inputs but 1 outputs"):
        load_code_tests({"input_output": {"inputs": ["1", "2"], "outputs": ["1"]}})
    with pytest.raises(CodeTestError, match="func_name"):
        load_code_tests({"test_cases": [{"input": "1", "output": "1", "testtype": "functional"}]})


def test_code_config_is_validated():
    from r1mega.config.base import ConfigError

    with pytest.raises(ConfigError, match="must exceed reward.code_budget_s"):
        RewardConfig(weights={"code": 1.0}, timeout_s=10).validate()
    with pytest.raises(ConfigError, match="code_test_time_s"):
        RewardConfig(weights={"code": 1.0}, timeout_s=60, code_test_time_s=0).validate()


class _ProgramEngine:
    """One rollout engine (DP 1) whose every response is the sum program."""

    tp_rank, dp_rank, dp_size, policy_version = 0, 0, 1, 0

    def __init__(self):
        self.samples = []

    def generate(self, prompts, n=1, *, prompt_texts, expected_version=None, group_offset=0, **sampling):
        from r1mega.types import Sample

        out = [Sample(prompt_ids=list(ids), response_ids=[1, 2, 3], group_id=group_offset + g, finish_reason="stop",
                      prompt_text=text, response_text=answer(SUM_PY))
               for g, (ids, text) in enumerate(zip(prompts, prompt_texts)) for _ in range(n)]
        self.samples += out
        return out


@needs_userns
def test_eval_counts_responses_whose_sandbox_failed_instead_of_passing_them_off_as_wrong(monkeypatch, tmp_path):
    from r1mega.config import load_config
    from r1mega.data.prompts import PromptRecord
    from r1mega.eval.evaluate import evaluate_engine

    cfg = load_config(None, ["reward.num_workers=0", "reward.weights={format: 1.0}", "reward.timeout_s=60",
                             "reward.code_test_time_s=10", "reward.code_budget_s=30", "eval.k=2", "eval.greedy=true"])
    records = [PromptRecord(index=i, prompt_text=f"add #{i}", prompt_ids=[5, 6], answer=None, metadata=dict(APPS_STDIO))
               for i in range(2)]
    engine = _ProgramEngine()
    ok = evaluate_engine(engine, records, cfg, prefix="")
    assert ok["pass@1"] == 1.0 and ok["greedy_acc"] == 1.0 and ok["scoring_errors"] == 0, \
        (ok, [(s.reward_breakdown, s.metadata.get("reward_info")) for s in engine.samples])
    monkeypatch.setenv("R1MEGA_SANDBOX_BIN", str(tmp_path / "missing"))
    monkeypatch.setattr("r1mega.sandbox.run.os.path.dirname", lambda p: str(tmp_path))
    broken = evaluate_engine(_ProgramEngine(), records, cfg, prefix="")
    assert broken["pass@1"] == 0.0 and broken["scoring_errors"] == 2 * (2 + 1)  # k samples + the greedy one
