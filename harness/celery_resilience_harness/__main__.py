"""``celery-resilience``: the project's command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: celery-resilience COMMAND [options]

  simulate [surge|outage|db-spike|all]   replay the reference's incidents, before and after
  fake-services [--host H] [--port P]     serve the fake providers, database and Sentry
  demo [--per-user N]                     admission control on a burst from two tiers"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if command == "simulate":
        from .simulation.cli import simulate_main

        return simulate_main(rest)
    if command == "fake-services":
        from .simulation.cli import fake_services_main

        return fake_services_main(rest)
    print(f"unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
