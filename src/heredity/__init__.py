"""heredity: measure and steer what a student model inherits from its teachers' synthetic data."""

from heredity.config import RunConfig
from heredity.errors import HeredityError
from heredity.plan import load_config

__version__ = "0.1.0"
__all__ = ["RunConfig", "load_config", "HeredityError", "run", "__version__"]


def run(config: RunConfig, out):
    """Run the whole loop (see ``heredity.pipeline.run``)."""
    from heredity.pipeline import run as _run

    return _run(config, out)
