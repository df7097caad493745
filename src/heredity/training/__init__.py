"""The training library behind the train stage (``heredity.stages.train``).

``steps`` (stage key, validation split, step counting), ``checkpoints`` (resume after a kill),
``telemetry`` (throughput, memory, hyper-parameters, loss plot), ``sft`` (the TRL SFT trainer),
``save`` (full model, merged or separate LoRA adapter) and ``distributed`` (the multi-process
launcher and its worker, ``python -m heredity.training.distributed JOB``). Nothing here reads
or writes the run directory's stages.
"""
