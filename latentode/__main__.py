"""``python -m latentode`` (and ``torchrun ... -m latentode``): the command line of :mod:`latentode.cli`."""

from .cli import run

run()
