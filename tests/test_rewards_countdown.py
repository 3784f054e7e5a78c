"""The countdown reward (r1mega.rewards.countdown): the checker by hand, the reward, the registry."""

from r1mega.rewards import REWARDS, RewardConfig, countdown_check, countdown_reward


def test_countdown_checker():
    nums = [3, 5, 2]
    assert countdown_check("3*5+2", nums, 17)
    assert countdown_check("(3 \\times 5) + 2 = 17", nums, 17)
    assert countdown_check("2+5*3", nums, 17)
    assert not countdown_check("17", nums, 17)              # numbers not used
    assert not countdown_check("3*5+2+2", nums, 19)          # 2 used twice
    assert not countdown_check("3*5", nums, 15)              # 2 unused
    assert not countdown_check("3*5+2", nums, 18)            # wrong value
    assert not countdown_check("3*5+2 = 18", nums, 17)
    assert not countdown_check("__import__('os')", nums, 17)
    assert not countdown_check("3**5+2", nums, 245)
    assert not countdown_check("5/(3-3)+2", [5, 3, 3, 2], 1)  # division by zero
    assert countdown_check("(5+3)/2*3", [5, 3, 2, 3], 12)
    assert not countdown_check(None, nums, 17)


def test_countdown_reward():
    cfg = RewardConfig()
    meta = {"numbers": [3, 5, 2], "target": 17}
    assert countdown_reward("<think> 15+2 </think> <answer> \\boxed{3*5+2} </answer>", "3*5+2", meta, cfg).score == 1.0
    assert countdown_reward("<think> x </think> <answer>5*3+2</answer>", None, meta, cfg).score == 1.0
    assert countdown_reward("<think> x </think> \\boxed{17}", "3*5+2", meta, cfg).score == 0.0
    assert countdown_reward("<think> \\boxed{3*5+2}", "3*5+2", meta, cfg).score == 0.0  # not closed
    assert countdown_reward("\\boxed{3*5+2}", "", {}, cfg).info["reason"] == "metadata lacks numbers/target"


def test_countdown_is_a_registered_reward():
    meta = {"numbers": [3, 5, 2], "target": 17}
    ok = " <think> 3*5=15, 15+2=17 </think> <answer> \\boxed{3*5+2} </answer>"
    bare = " <think> 17 </think> <answer> \\boxed{17} </answer>"  # the target alone is not an equation
    assert REWARDS["countdown"] is countdown_reward
    assert REWARDS["countdown"](ok, "3*5+2", meta, RewardConfig()).score == 1.0
    assert REWARDS["countdown"](bare, "3*5+2", meta, RewardConfig()).score == 0.0
