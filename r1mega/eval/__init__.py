"""Evaluation: metrics (pass@k, maj@k) and the evaluation loop. Import submodules directly
(``from r1mega.eval.metrics import pass_at_k``); this package imports nothing heavy."""
