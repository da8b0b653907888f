"""Evaluation: k paths per mode from a model, answers (PoT programs run in the sandbox), votes within each mode and
pooled over both (MD), accuracy under a named rule; every path kept in `eval_samples`, summaries in `evals`.

`run_eval(recipe, registry_path, data_dir)` runs a recipe; `vote` is the pure voting function; `report` builds the
comparison table and the Hub `model-index` results.
"""

from mixdistill.evaluate.backends import EvalError, make_backend
from mixdistill.evaluate.run import TaskResult, run_eval
from mixdistill.evaluate.vote import PathAnswer, Vote, vote, vote_key

__all__ = ["EvalError", "PathAnswer", "TaskResult", "Vote", "make_backend", "run_eval", "vote", "vote_key"]
