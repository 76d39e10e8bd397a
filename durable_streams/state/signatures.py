"""The arguments of a call to one of Django's methods, by parameter name.

The streamed ``save_base`` and ``bulk_create`` read some of Django's options
(``using``, ``ignore_conflicts``, ``unique_fields``...). Binding the call to
the signature of the method it goes to finds them however the caller passed
them, by position or by keyword. tests/unit/test_state_signatures.py pins
those parameters against the installed Django.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["call_arguments"]


@functools.cache
def _signature(function: Callable) -> inspect.Signature:
    return inspect.signature(function)


def call_arguments(method: Callable, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of ``method(*args, **kwargs)`` by parameter name.

    Defaults are filled in, and keywords that a ``**kwargs`` parameter takes
    are merged in (an override written as ``save_base(self, *args, **kwargs)``).
    ``method`` may be a bound method. Raises ``TypeError``, as the call would,
    if the arguments do not fit its signature.
    """
    function = getattr(method, "__func__", method)
    if function is not method:
        args = (method.__self__, *args)  # type: ignore[attr-defined]
    signature = _signature(function)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            named[name] = value
    return named
