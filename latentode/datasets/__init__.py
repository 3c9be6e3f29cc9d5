"""Datasets: synthetic generators of several dynamical systems, PhysioNet 2012 and Rubanova et al.'s periodic task."""

from .dynamics import (make_long_oscillator, make_lotka_volterra, make_mixed_sensors, make_oscillator, make_pk,
                       make_van_der_pol)
from .periodic import make_periodic, periodic_task
from .physionet import load_physionet2012
from .synthetic import make_synthetic

__all__ = ["load_physionet2012", "make_long_oscillator", "make_lotka_volterra", "make_mixed_sensors",
           "make_oscillator", "make_periodic", "make_pk", "make_synthetic", "make_van_der_pol", "periodic_task"]
