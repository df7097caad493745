"""Run one train stage in its own process (the resume test kills this process with SIGKILL).

usage: python train_job.py JOB.json   with {"run_dir", "arm", "train": {TrainConfig fields}} and, for a
preference arm, "preference": {PreferenceArm fields}
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_helpers import run_config, train_config

from heredity.core.rundir import Stage
from heredity.stages.train import run_train


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    run_dir = Path(job["run_dir"])
    select = Stage(run_dir, "select", {})  # only its folder and manifest are read
    run_train(run_config(train_config(**job["train"]), job.get("preference")), run_dir, select, job["arm"])


if __name__ == "__main__":
    main(sys.argv[1])
