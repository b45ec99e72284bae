"""The name backprop installs under, and the pip command for its extras, for every hint that names one.

``backprop`` on PyPI is an unrelated project, so the distribution is ``backprop-nn``; it installs the
``backprop`` package and the ``backprop`` command. Backends are the lowest layer whose messages name an
install command, so the name lives here and ``backprop/`` imports it from here.
"""

from __future__ import annotations

DISTRIBUTION = "backprop-nn"


def pip_install(extra: str, *alternatives: str) -> str:
    """``pip install 'backprop-nn[EXTRA]'``, with `` or 'backprop-nn[OTHER]'`` for each alternative extra."""
    return "pip install " + " or ".join(f"'{DISTRIBUTION}[{e}]'" for e in (extra, *alternatives))
