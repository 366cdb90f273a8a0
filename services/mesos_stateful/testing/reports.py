"""Whether the test a fixture serves failed, so its teardown can print what helps (process logs).

``tests/conftest.py`` records each phase's report with :func:`record`, from a
``pytest_runtest_makereport`` hook wrapper (pytest docs, "Making test result information
available in fixtures"); a fixture asks :func:`failed` after its ``yield``.
"""

from __future__ import annotations

import pytest

_FAILED = pytest.StashKey[bool]()


def record(item: pytest.Item, report: pytest.TestReport) -> None:
    """Remember that ``item`` failed in a phase (setup or call; a timeout counts)."""
    if report.failed:
        item.stash[_FAILED] = True


def failed(request: pytest.FixtureRequest) -> bool:
    """True once the test ``request`` belongs to failed in its setup or call."""
    node: pytest.Item = request.node
    return node.stash.get(_FAILED, False)
