"""LLM as judge (a library): pairwise comparison of two answers to the same instruction by a judge model.

Two uses:

- ``pairwise``: model A's answers against model B's on the same prompts; the judge's win rate
  of A over B with a bootstrap 95% CI over prompts, how often the judge agrees with itself when
  the answers swap places, and a length-controlled win rate;
- ``preference_profile``: the *judge-preference profile* of "LLM See, LLM Do" (Shimabucoro et
  al. 2024): a fixed set of answer pairs from several models (``alpaca_eval_pairs``), judged by
  the model under study; which models, and which kinds of answer (longer ones), it prefers.
  ``compare_profiles`` compares two judges (base vs fine-tuned student) on the same pairs with
  paired resampling.

Protocol (the choices made):

- **Judge.** Any generation backend (``transformers``, ``openai``), built from a
  ``TeacherConfig`` (``JudgeConfig.model``, in :mod:`heredity.config`) through
  ``heredity.backends.open_backend``; ``replay`` cannot judge. Greedy decoding,
  ``max_new_tokens`` (8) tokens; ``model.sampling`` is ignored.
- **Rubric.** ``JUDGE_TEMPLATE``: the instruction, "Answer (a)", "Answer (b)", then "Output
  only (a) or (b)". Answers longer than ``max_answer_chars`` are cut for the prompt (and
  counted); lengths used for length control are always those of the full answers.
- **Both orders.** Every pair is judged as (A, B) and as (B, A). A prompt's preference for A is
  the mean of the two orders' preferences, so a judge that always names the first answer scores
  exactly 0.5 everywhere. *Position consistency*: share of prompts, among those with both
  verdicts parsed, where the two orders name the same answer.
- **Verdict parsing** (``parse_verdict``): a bare letter, "(a)", "**(B)**", "Answer: a", "a) ..."
  or text naming exactly one of "(a)"/"(b)"; text naming both, or neither, is *unparseable*.
  Unparseable verdicts are counted and reported; by default (``unparseable: tie``) an
  unparseable order counts as 0.5 (no information), so every prompt keeps its weight and a judge
  that cannot follow the format is pulled towards 50, not towards whichever answer it happened
  to name. ``unparseable: drop`` leaves such orders out instead (a prompt with neither order
  parsed is dropped; one with a single order parsed loses the position-bias cancellation).
- **Log-probability verdicts** (``method: logprob``, the default for a local ``transformers``
  judge): instead of decoding, the judge's next-token log-probabilities of the two verdict
  letters after the assistant turn's "(" are compared (the first token where "(a)" and "(b)"
  differ). The preference for the first answer is ``p(a) / (p(a) + p(b))``, a soft verdict as in
  AlpacaEval 2's weighted win rate; never unparseable. Tiny models (SmolLM2-135M) rarely follow
  the output format when decoding, so this is what makes them usable as judges. The hard
  verdict (for consistency) is the likelier letter. ``method: generate`` decodes instead.
- **Win rate** of A: 100 × mean over prompts of the preference for A (ties count half), with a
  percentile bootstrap 95% CI over prompts.
- **Length-controlled win rate**, after AlpacaEval 2 LC (Dubois et al. 2024): a logistic
  regression of the (soft) preference on a model term (θ_A − θ_B) plus φ·tanh(Δlen / sd(Δlen)),
  Δlen = len(A) − len(B) in characters of the full answers, sd over the judged prompts; then
  100·σ(θ_A − θ_B), i.e. the prediction with the length difference set to zero. AlpacaEval's
  instruction-difficulty term is left out. Fitted by Newton's method with a small L2 penalty
  (``lc_l2``) so that a judge that always prefers the longer answer (perfect separation) still
  has a finite fit. With several models (a profile) there is one θ per model, and a model's LC
  win rate is the mean over its own pairs of σ(θ_m − θ_opponent). The CI refits on each
  bootstrap resample.

Outputs (``out``): ``judgments.parquet`` (one row per pair: both orders' raw verdicts, parsed
letters, preferences, lengths) and ``summary.json``, written atomically.

Modules: ``verdicts`` (queries, verdicts, pairs, parsing, the rubric's messages), ``judges``
(the generation and log-probability judges, ``judge_config``, ``open_judge``), ``pairwise``
(judging pairs in both orders and the pairwise summary), ``preference`` (the judge-preference
profile and ``compare_profiles``), ``answers`` (AlpacaEval pairs, answer files). The
statistics (bootstrap, the length-controlled GLM) are in :mod:`heredity.core.stats`; the run's
judge stage is :mod:`heredity.stages.judge`.
"""


from heredity.judging.answers import (
    ANSWER_FIELDS,
    PROMPT_FIELDS,
    alpaca_eval_pairs,
    load_answers,
    pair_answers,
)
from heredity.judging.judges import (
    GenerationJudge,
    Judge,
    LogprobJudge,
    judge_config,
    open_judge,
)
from heredity.judging.pairwise import judge_pairs, pairwise, summarise_pairwise
from heredity.judging.preference import (
    compare_profiles,
    preference_profile,
    summarise_profile,
)
from heredity.judging.verdicts import (
    Pair,
    Query,
    Verdict,
    judge_messages,
    parse_verdict,
)

__all__ = [
    "ANSWER_FIELDS", "PROMPT_FIELDS", "GenerationJudge", "Judge", "LogprobJudge", "Pair", "Query", "Verdict",
    "alpaca_eval_pairs", "compare_profiles", "judge_config", "judge_messages", "judge_pairs", "load_answers",
    "open_judge", "pair_answers", "pairwise", "parse_verdict", "preference_profile", "summarise_pairwise",
    "summarise_profile",
]
