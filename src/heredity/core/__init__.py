"""Shared services every layer above may use: the run directory, statistics, HTTP, registries,
model references and loading, the batched log-likelihood scorer, prompt loading."""
