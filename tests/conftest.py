import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import exaq_cpu  # noqa: E402

BACKENDS = exaq_cpu.backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run the test once per backend this CPU supports, forcing it for the test's thread."""
    with exaq_cpu.use_backend(request.param):
        yield request.param
