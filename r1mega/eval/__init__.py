"""Evaluation: metrics (pass@1, cons@k, pass@k), the evaluation loop and per-benchmark tables.
Import submodules directly (``from r1mega.eval.metrics import pass_at_k``); this package imports
nothing heavy."""
