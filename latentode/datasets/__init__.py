"""Datasets: a synthetic generator, PhysioNet 2012 and Rubanova et al.'s periodic task."""

from .periodic import make_periodic, periodic_task
from .physionet import load_physionet2012
from .synthetic import make_synthetic

__all__ = ["load_physionet2012", "make_periodic", "make_synthetic", "periodic_task"]
