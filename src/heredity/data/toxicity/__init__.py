"""Trained weights the toxicity metrics load with importlib.resources."""
