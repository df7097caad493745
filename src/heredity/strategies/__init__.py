"""Selection strategies: which candidate, if any, each prompt keeps.

A strategy is a small pure function over the scored pool grouped by prompt
(``{prompt_id: [row, ...]}``; a row holds ``prompt_id``, ``prompt``, ``teacher``,
``sample_index``, ``text``, ``finish_reason`` and one float per metric). It returns the kept
rows: at most one per prompt, in sorted prompt-id order. Filters may drop prompts.

Strategies are found by name in ``STRATEGIES``. Adding one takes a parameter model and a
function::

    class LongestParams(Params):
        cap: int = 500

    @register_strategy("longest-under-cap", LongestParams)
    def longest_under_cap(groups, params, ctx):
        ...

A *spec* names a strategy and its parameters, as a config writes it:
``"random"`` or ``{"strategy": "best", "metric": "words", "direction": "max"}``.
``select(groups, spec, teacher_order=...)`` validates the spec, checks that every metric it
reads was scored, and runs it.

Built-in strategies and their parameters:

- passive: ``random`` (seed), ``first``, ``teacher`` (name);
- ``best`` (metric, direction), ``closest`` (metric, target);
- ``threshold`` (metric, op, value, then: a spec, among: all | passing) — a prompt filter;
- ``from_teachers`` (teachers: [labels], then: a spec) — only those teachers' candidates (rounds);
- ``constrained`` (metric, direction, subject_to: one or several {metric, op, value});
- ``weighted`` (weights: {metric: weight}) on pool-wide z-scores;
- ``pareto`` (objectives: {metric: max | min}, tie_break: rank_sum | order).

``sweep`` runs a rule on the first k' candidates per prompt (steering strength),
``data_card`` summarises what a selection changed, and ``export_selection`` /
``to_sft_dataset`` turn a selection into chat data for TRL's SFTTrainer.

Conventions shared by every built-in strategy:

- Ties break by the caller's teacher order, then ``sample_index`` (teachers missing from the
  order come after it, by name), so a selection never depends on the order of pool rows.
- A missing metric value (NaN or None) never wins: it ranks below every real value and
  fails every threshold or constraint.

Modules: ``base`` (Spec, Params, Context, the registry, ``select``), ``builtin`` (the nine
strategies), ``steering`` (``sweep``, ``dose_response``), ``card`` (``data_card``) and
``export`` (chat rows for SFT).
"""

from heredity.strategies.base import (
    BASE_FIELDS,
    STRATEGIES,
    Context,
    Direction,
    FreeParams,
    Groups,
    Op,
    Params,
    Row,
    Spec,
    SpecError,
    Strategy,
    StrategyFn,
    get_strategy,
    group_by_prompt,
    list_strategies,
    oriented,
    parse_spec,
    passes,
    reads_scores_only,
    register_strategy,
    select,
    spec_metrics,
    value,
)

# Importing the built-in strategies registers them.
from heredity.strategies.builtin import (  # noqa: E402
    BestParams,
    ClosestParams,
    Condition,
    ConstrainedParams,
    ParetoParams,
    RandomParams,
    TeacherParams,
    ThresholdParams,
    WeightedParams,
    average_ranks,
    pareto_front,
    select_best,
    select_closest,
    select_constrained,
    select_first,
    select_pareto,
    select_random,
    select_teacher,
    select_threshold,
    select_weighted,
    weighted_scores,
    zscore_stats,
)
from heredity.strategies.card import data_card  # noqa: E402
from heredity.strategies.export import (  # noqa: E402
    ChatFormat,
    export_batches,
    export_selection,
    preference_schema,
    to_chat_rows,
    to_preference_rows,
    to_sft_dataset,
)
from heredity.strategies.pairs import DROP_REASONS, build_pairs, pairs_card  # noqa: E402
from heredity.strategies.steering import dose_response, sweep  # noqa: E402

__all__ = [
    "BASE_FIELDS", "DROP_REASONS", "STRATEGIES", "BestParams", "ChatFormat", "ClosestParams", "Condition", "ConstrainedParams",
    "Context", "Direction", "FreeParams", "Groups", "Op", "ParetoParams", "Params", "RandomParams", "Row", "Spec",
    "SpecError", "Strategy", "StrategyFn", "TeacherParams", "ThresholdParams", "WeightedParams", "average_ranks",
    "build_pairs", "data_card", "dose_response", "export_batches", "export_selection", "get_strategy", "group_by_prompt", "list_strategies",
    "oriented", "pairs_card", "pareto_front", "parse_spec", "passes", "preference_schema", "reads_scores_only", "register_strategy", "select", "select_best",
    "select_closest", "select_constrained", "select_first", "select_pareto", "select_random", "select_teacher",
    "select_threshold", "select_weighted", "spec_metrics", "sweep", "to_chat_rows", "to_preference_rows", "to_sft_dataset", "value",
    "weighted_scores", "zscore_stats",
]
