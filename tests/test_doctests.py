"""The Examples sections of the public docstrings run as doctests."""
import doctest

import pytest

import exaq_cpu._api
import exaq_cpu._backend
import exaq_cpu.clipping._calibrator
import exaq_cpu.clipping._model
import exaq_cpu.clipping._robust
import exaq_cpu.clipping._row
import exaq_cpu.clipping._tablemodes
import exaq_cpu.lutgemm
import exaq_cpu.packed

# exaq_cpu.clipping re-exports its functions from these modules; doctest finds a
# function's docstring only in the module that defines it, so they are listed here.
MODULES = [exaq_cpu._api, exaq_cpu._backend, exaq_cpu.packed, exaq_cpu.lutgemm,
           exaq_cpu.clipping._model, exaq_cpu.clipping._calibrator, exaq_cpu.clipping._robust,
           exaq_cpu.clipping._row, exaq_cpu.clipping._tablemodes]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{module.__name__} has no examples"
