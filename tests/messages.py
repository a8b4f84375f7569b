"""Tests of an error assert the facts a user needs from it (the flag, the value, the file, the fix), not its wording."""

from __future__ import annotations

import contextlib

import pytest


@contextlib.contextmanager
def raises_naming(kind, *facts):
    """`pytest.raises(kind)` whose message names every one of `facts`, in any order and any words around them.

    `with raises_naming(ValueError, "'mnist'", "cifar10"): ...`: the message may be reworded freely as long as
    it still says what was wrong and what is valid.
    """
    with pytest.raises(kind) as raised:
        yield raised
    message = str(raised.value)
    missing = [fact for fact in facts if str(fact) not in message]
    assert not missing, f"the message {message!r} does not name {missing}"
