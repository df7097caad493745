"""Scale-out of the score stage on Ray: the default ``toxicity`` metric over the AlpacaEval
answers pool (shared/data/alpaca_eval, the ``output`` of every file: 12 × 805 = 9,660 texts).

Three timings of the same texts, each end to end as a stage pays it (the model loaded, every
text scored, no score cache):

* ``local``: the metric called in this process, torch on one thread;
* ``ray_1``: the Ray path (``heredity.metrics.ray_scoring``, Ray Data ``map_batches`` over an
  actor pool) with one replica of one CPU;
* ``ray_2``: the same with two replicas of one CPU each.

A local Ray is started with ``--cpus`` CPUs (default 2); each Ray worker runs torch on one
thread (Ray sets ``OMP_NUM_THREADS`` to a replica's CPUs). Checks that the three give the
same scores (to float32 rounding: the embedding's sums depend on which texts share a batch).

Figures (last line, one JSON object): ``ratio_two_workers_vs_one`` = ray_1 seconds / ray_2
seconds (goal: >= 1.7 on two otherwise idle cores); ``ratio_ray_one_worker_vs_local`` = local
seconds / ray_1 seconds (below 1: what Ray's startup, serialisation and scheduling cost one
worker against the plain call). Both are higher-is-better for heredity.

    PYTHONPATH=src python benchmarks/ray_scale.py [--quick] [--limit N] [--batch-size 64] [--cpus 2]

``--quick`` scores 240 texts, a smoke test of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
try:
    import heredity  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "src"))


def load_texts(data: Path, limit: int | None) -> list[str]:
    files = sorted((data / "alpaca_eval").glob("*.json"))
    if not files:
        sys.exit(f"no alpaca_eval/*.json under {data}")
    texts = [row["output"] for path in files for row in json.loads(path.read_text(encoding="utf-8"))]
    return texts[:limit] if limit else texts


def main() -> None:
    from heredity.core.data import full_data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N texts")
    parser.add_argument("--quick", action="store_true", help="240 texts: a smoke test")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()
    limit = 240 if args.quick and not args.limit else args.limit
    texts = load_texts(full_data_dir(args.data, "alpaca_eval"), limit)

    import numpy as np
    import ray
    import torch

    from heredity.config import RayConfig
    from heredity.metrics import MetricContext, resolve_all
    from heredity.metrics.ray_scoring import score_on_ray

    [bound] = resolve_all(["toxicity"])
    context = MetricContext(device="cpu")

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    local = bound(texts, context)
    local_s = time.perf_counter() - t0
    print(f"local          {len(texts)} texts in {local_s:7.1f} s  ({len(texts) / local_s:6.1f} texts/s)",
          file=sys.stderr)

    timings, results = {}, {}
    for replicas in (1, 2):
        rc = RayConfig(replicas=replicas, num_cpus=args.cpus, num_cpus_per_replica=1.0, batch_size=args.batch_size)
        t0 = time.perf_counter()
        results[replicas] = score_on_ray(rc, bound, texts, MetricContext(device="cpu"))
        timings[replicas] = time.perf_counter() - t0
        print(f"ray, {replicas} worker{'s' if replicas > 1 else ' '} {len(texts)} texts in {timings[replicas]:7.1f} s"
              f"  ({len(texts) / timings[replicas]:6.1f} texts/s)", file=sys.stderr)
    ray.shutdown()

    worst = max(float(np.max(np.abs(np.asarray(results[r]) - np.asarray(local)))) for r in (1, 2))
    figures = {
        "texts": len(texts),
        "batch_size": args.batch_size,
        "ray_cpus": args.cpus,
        "local_s": round(local_s, 2),
        "ray_one_worker_s": round(timings[1], 2),
        "ray_two_workers_s": round(timings[2], 2),
        "local_texts_per_s": round(len(texts) / local_s, 1),
        "ray_two_workers_texts_per_s": round(len(texts) / timings[2], 1),
        "max_abs_diff_vs_local": worst,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "quick": bool(args.quick),
        "ratio_two_workers_vs_one": round(timings[1] / timings[2], 3),
        "ratio_ray_one_worker_vs_local": round(local_s / timings[1], 3),
    }
    if worst > 1e-5:
        print(f"scores differ from the local run by up to {worst}", file=sys.stderr)
        print(json.dumps(figures))
        sys.exit(1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
