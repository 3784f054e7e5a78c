"""Rejection sampling (DeepSeek-R1 stage 3): sample k responses per prompt from the converged RL
policy, keep the correct and readable ones, write them as SFT data.

Pure parts (no torch): :mod:`~r1mega.rejection.config`, :mod:`~r1mega.rejection.filters`
(:func:`select`), :mod:`~r1mega.rejection.dedup`. The command (engine, scorer, files) is
:mod:`~r1mega.rejection.run`; its argument parser is :mod:`~r1mega.rejection.cli`.
"""

from r1mega.rejection.config import RejectionConfig
from r1mega.rejection.dedup import jaccard, shingles
from r1mega.rejection.filters import REASONS, Candidate, Dropped, Selection, select

__all__ = ["REASONS", "Candidate", "Dropped", "RejectionConfig", "Selection", "jaccard", "select", "shingles"]
