"""Reporting: what a finished run, several runs or the committed studies show people.

``report`` (summary.json, report.md, report.html of a run; ``heredity report DIR`` re-renders),
``html`` (what the pages show; the pages themselves are the Jinja2 templates in ``templates/``),
``plots`` (matplotlib → inline SVG), ``compare`` (``heredity compare``: runs side by side) and
``results`` (``heredity results``: every study under ``experiments/``). It reads run directories
and summaries and drives no stage, so the stage runners and the pipeline may call it.
"""
