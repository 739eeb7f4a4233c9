"""`evaluate` module: mean ± standard error of episode returns, success rate, per-category breakdown.

Load it from its folder, offline::

    import evaluate
    from trainers.evaluation import METRIC_PATH
    metric = evaluate.load(METRIC_PATH)
    metric.compute(returns=[1.0, 0.0], successes=[True, False], categories=["boil", "melt"])
"""

import datasets
import evaluate

from trainers.evaluation.metrics import summarize_returns

_DESCRIPTION = """Scores rollouts of a multi-turn agent: the mean episode return with its standard
error (sample standard deviation over sqrt(N)), the success rate, and the same per category. This is
how the BOOST paper reports live evaluations (64 episodes, mean ± s.e.)."""

_KWARGS_DESCRIPTION = """
Args:
    returns (`list` of `float`): the return of each episode (sum of its per-turn rewards).
    successes (`list` of `bool`): whether each episode succeeded.
    categories (`list` of `str`): the task category of each episode ("" when there is none).
Returns:
    mean_return (`float`), stderr (`float`, nan with fewer than two episodes), success_rate
    (`float` in [0, 1]), num_episodes (`int`), per_category (`dict` of category -> the same four keys).
Examples:
    >>> metric.compute(
    ...     returns=[1.0, 0.0, 0.5], successes=[True, False, False], categories=["a", "a", "b"]
    ... )["mean_return"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TrajectoryReturn(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "returns": datasets.Value("float64"),
                    "successes": datasets.Value("bool"),
                    "categories": datasets.Value("string"),
                }
            ),
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of episodes (``returns``, ``successes``, ``categories``)."""
        # evaluate fills absent inputs with None and then fails on len(None); name them instead
        given = {name: kwargs.get(name) for name in ("returns", "successes", "categories")}
        missing = [name for name, value in given.items() if value is None]
        if missing and len(missing) < len(given):
            raise ValueError(
                f"trajectory_return inputs are missing: {missing}; pass returns=, successes= and categories= "
                "(categories=[''] * n when there are none)"
            )
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def _compute(self, returns, successes, categories):
        return summarize_returns(returns, successes, categories).to_dict()
