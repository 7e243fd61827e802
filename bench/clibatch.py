"""Run many `aftersales` CLI commands in one process: `python -m bench.clibatch ARGS.json`.

The benchmark creates 40 agent users and their personal tokens with `aftersales user create` and
`aftersales token create --user`; starting 80 interpreters takes minutes on a 2-core machine, so this
runs the same click commands (`aftersales.cli.main`) one after the other in a single interpreter.
Input: a JSON list of argument lists. Output: one JSON list of {"ok", "out"} (stdout, or the error).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import click


def main(argv: list[str] | None = None) -> int:
    from aftersales.cli import main as cli

    argv = argv if argv is not None else sys.argv[1:]
    with open(argv[0]) as f:
        commands = json.load(f)
    results = []
    for args in commands:
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                cli.main(args, prog_name="aftersales", standalone_mode=False)
            results.append({"ok": True, "out": out.getvalue().strip()})
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort) as exc:
            results.append({"ok": False, "out": getattr(exc, "message", str(exc))})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
