"""The bad-input catalogues' test (test_bad_input_catalogue.py, test_bad_input_torch.py): each row is
(name, call, exception type, message fragment); the call must raise that type with that fragment."""

import pytest


def parametrize(rows):
    """pytest parametrisation over the rows, each named by its first column."""
    return pytest.mark.parametrize("call, exc, fragment", [r[1:] for r in rows], ids=[r[0] for r in rows])


def check(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value), f"message {str(info.value)!r} lacks {fragment!r}"
