"""Parameter checks shared by the estimator: errors name the argument, what was expected and found."""

from __future__ import annotations

import numbers

import torch


class InputError(Exception):
    """Base of the errors that boundary validation raises about a user's arguments or data.

    The command line reports these (and only these, besides its own usage errors) as one-line
    messages with exit code 2; any other exception is a bug and is shown with its traceback.
    Catch ``ValueError`` / ``TypeError`` as usual: every such error is one of those too.
    """


class InputValueError(InputError, ValueError):
    """A user's argument or data has the right type but a wrong value."""


class InputTypeError(InputError, TypeError):
    """A user's argument or data has the wrong type."""


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise InputValueError(f"{name}={value!r} is not one of {sorted(choices)}.")


def check_number(name, value, *, low=None, high=None, integer=False, low_open=False, allow_none=False):
    if value is None and allow_none:
        return
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputTypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}.")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}.")
    if high is not None and value > high:
        raise InputValueError(f"{name} must be <= {high}, got {value!r}.")


def resolve_device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputValueError(f"device={device!r} is not 'auto' or a torch device such as 'cpu' or 'cuda'.") from err


def resolve_threads(n_threads, device) -> int | None:
    """The torch thread count for the estimator's own work (None: leave torch's setting).

    "auto": 1 on CPU (the matrices of a latent ODE are small: a second thread gains
    little and competes with other processes for the cores), torch's own setting on CUDA.
    """
    if n_threads == "auto":
        return 1 if device.type == "cpu" else None
    if n_threads is None:
        return None
    check_number("n_threads", n_threads, low=1, integer=True)
    return int(n_threads)


class torch_threads:
    """Context manager: run with ``n`` torch threads, then restore the caller's count."""

    def __init__(self, n: int | None):
        self.n, self.saved = n, None

    def __enter__(self):
        if self.n is not None:
            self.saved = torch.get_num_threads()
            if self.saved != self.n:
                torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.saved is not None and torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)
        return False
