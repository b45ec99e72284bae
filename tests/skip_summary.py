"""Skipped tests summed up by reason: one line per reason with its count, in place of pytest's line per
skipping test location (pyproject's addopts leaves ``s`` out of ``-r``; ``-rs`` brings those lines back).
tests/conftest.py installs the hook; tests/test_skip_summary.py loads it alone with ``-p skip_summary``."""

from __future__ import annotations

from collections import Counter

import pytest


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter) -> None:
    reasons = Counter(skip_reason(r) for r in terminalreporter.stats.get("skipped", []) if not hasattr(r, "wasxfail"))
    if reasons:
        terminalreporter.section(f"{sum(reasons.values())} skipped, by reason (-rs lists the tests)")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:5d}  {reason}")
