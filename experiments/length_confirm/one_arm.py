"""Train and evaluate one arm of one seed replicate of this study, with the pipeline's own stages.

Why: the study needs ~4 h of a 2-core CPU and a session lasts 3 h, and trained weights (0.5 GB an
arm) cannot be carried to the next session, only the finished stages' small outputs. `heredity run`
trains both arms of a seed before evaluating either, so a session that ends between the two keeps
nothing of that seed; this script finishes one arm (train, then evaluate) so its stages can be
carried. It builds every stage exactly as `heredity run` does (same functions, same keys): on
replicate 0, which `heredity run` finished, every stage it touches must be reused, and `--check`
asserts that before any compute is spent. The full run afterwards reuses what this made.

    python experiments/length_confirm/one_arm.py --check            # replicate 0, passive: all reused
    python experiments/length_confirm/one_arm.py --index 1 --arm passive
"""

from __future__ import annotations

import argparse
from pathlib import Path

from heredity.core.rundir import RunLock
from heredity.pipeline import SHARED_STAGES, _link_stage, quiet_libraries, replicate_config, replicate_dir
from heredity.plan import load_config, preflight
from heredity.stages.evaluate import run_evaluate
from heredity.stages.generate import run_generate
from heredity.stages.score import run_score
from heredity.stages.select import run_select
from heredity.stages.train import plan_equal_steps, run_train

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/length_confirm"))
    ap.add_argument("--index", type=int, default=0, help="replicate (0: seed 0, in OUT itself)")
    ap.add_argument("--arm", default="passive")
    ap.add_argument("--check", action="store_true", help="only confirm every stage is reused (nothing computed)")
    args = ap.parse_args()

    cfg = load_config(HERE / "config.yaml")
    train_prompts, eval_prompts = preflight(cfg, args.out)
    rcfg = replicate_config(cfg, args.index)
    where = args.out if args.index == 0 else replicate_dir(args.out, cfg.train.seed_list()[args.index])
    if args.index:
        for name in SHARED_STAGES:
            _link_stage(args.out / name, where / name)
    quiet_libraries()
    sft_arms = [a for a in rcfg.select.arms() if a not in rcfg.select.preference]

    def stages():
        select = run_select(rcfg, where, run_score(rcfg, where, run_generate(rcfg, where, train_prompts)))
        yield select
        trained = run_train(rcfg, where, select, args.arm, plan_equal_steps(rcfg, where, select, sft_arms))
        yield trained
        if args.check:
            assert trained.reused, f"{trained.name} would be computed: its key differs from the pipeline's"
        yield run_evaluate(rcfg, where, args.arm, eval_prompts, trained)

    if args.check:  # replicate 0 may be locked by the running study: only reads happen here
        done = list(stages())
    else:
        with RunLock(where):
            done = list(stages())
    for stage in done:
        print(f"{stage.name}: {'reused' if stage.reused else 'computed'} (key {stage.key})")
    if args.check:
        assert all(s.reused for s in done), "a stage would be computed: keys differ from the pipeline's"
        print("every stage reused: this script builds the pipeline's keys")


if __name__ == "__main__":
    main()
