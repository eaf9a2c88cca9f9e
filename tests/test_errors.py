"""datacomp.errors: the shared 'an int, not a bool' predicate and the integer-at-least check."""

from __future__ import annotations

import numpy as np
import pytest

from datacomp.errors import ConfigError, check_int_at_least, is_int


@pytest.mark.parametrize("value, expected", [
    (1, True), (np.int64(1), True), (True, False), (np.bool_(True), False), (1.0, False), ("1", False), (None, False),
])
def test_is_int(value, expected):
    assert is_int(value) is expected


def test_check_int_at_least_names_the_argument_and_the_fix():
    check_int_at_least(np.int64(2), "folds", 2)
    with pytest.raises(ConfigError, match=r"^folds must be an integer >= 2 \(--set folds=N\), got 1$"):
        check_int_at_least(1, "folds", 2, " (--set folds=N)")
    with pytest.raises(ConfigError, match=r"^ipc must be an integer >= 1, got True$"):
        check_int_at_least(True, "ipc", 1)
