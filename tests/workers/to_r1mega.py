"""Worker: convert an HF model directory to an r1mega checkpoint (TP=1)."""

import sys

from r1mega.checkpoint import hf_to_r1mega
from r1mega.config.sections import ParallelConfig

if __name__ == "__main__":
    hf_to_r1mega(sys.argv[1], sys.argv[2], ParallelConfig(), tokenizer_dir=sys.argv[1])
