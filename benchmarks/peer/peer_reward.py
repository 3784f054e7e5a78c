"""The reward both systems use in the peer benchmark: 1.0 when the reference answer appears in the
completion, else 0.0. Deliberately trivial and scored in the training process on both sides, so the
benchmark compares the systems (generation, reference logprobs, training, weight sync), not two
answer checkers. No imports: the TRL environment loads it as it is."""


def contains(text, answer, meta=None, cfg=None):
    """r1mega's reward signature (text, answer, meta, cfg) -> float."""
    return 1.0 if answer is not None and str(answer) in text else 0.0


def contains_trl(completions, answer, **kwargs):
    """TRL's reward-function signature: the completions and the dataset's extra columns, as lists."""
    return [contains(c, a) for c, a in zip(completions, answer)]
