"""Small runnable examples (``python -m backprop.examples.NAME --help``), each teaching one recipe.

They share their command line's frame: ``--help`` shows every option's default, and ``--backend`` picks
where the layers run.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from backprop.backends import Backend, BackendUnavailableError, get_backend, known_backends


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, except a flag's (off) and a default of None, which the
    help text describes itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def example_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of example ``name`` (described by the first line of its docstring ``doc``), with
    ``--backend``; add the example's own options, then call :func:`parse`."""
    parser = argparse.ArgumentParser(prog=f"python -m backprop.examples.{name}", description=doc.split("\n")[0],
                                     formatter_class=_ShowDefaults)
    parser.add_argument("--backend", choices=[*known_backends(), "auto"],
                        help="where the layers run (default: $BACKPROP_BACKEND, else numpy)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace, Backend]:
    """The parsed arguments and the backend ``--backend`` names; a backend that cannot run here (or a wrong
    $BACKPROP_BACKEND) is a usage error saying why."""
    args = parser.parse_args(argv)
    try:
        return args, get_backend(args.backend)
    except (BackendUnavailableError, ValueError) as exc:
        parser.error(str(exc))
