"""The Examples sections of the public docstrings run as doctests."""
import doctest

import pytest

import exaq_cpu._api
import exaq_cpu._backend
import exaq_cpu.lutgemm
import exaq_cpu.packed

MODULES = [exaq_cpu._api, exaq_cpu._backend, exaq_cpu.packed, exaq_cpu.lutgemm]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if module is not exaq_cpu.packed:
        assert result.attempted > 0, f"{module.__name__} has no examples"
