"""The one exit-status policy of every command (`zsris-rt ...` and `zsris-export ...`).

0 success; 1 an internal error (a bug: the one-line message says so) or a command's own failed
verdict (doctor found a problem, check fell below --min-agreement); 2 bad input, including files
that cannot be read or written; 3 the proposer kept no mask; 130 interrupted (Ctrl-C); 141, and
nothing printed, when the reader of stdout went away (`| head`). Every
failure is one line on stderr; ZSRIS_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..errors import NoMaskError, ZsrisError

OK = 0
INTERNAL_ERROR = 1
BAD_INPUT = 2
NO_MASK = 3
INTERRUPTED = 130
BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports it


def debugging() -> bool:
    """ZSRIS_DEBUG set to anything but "" or "0": let exceptions through with their traceback."""
    return os.environ.get("ZSRIS_DEBUG", "") not in ("", "0")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_command(prog: str, body: Callable[[], int],
                on_interrupt: Callable[[], None] | None = None) -> int:
    """Run a parsed command's `body` and turn what it raises into the exit status above.

    `on_interrupt` may print what a Ctrl-C leaves behind (eval: how to resume).
    """
    try:
        return body()
    except KeyboardInterrupt:
        if debugging():
            raise
        if on_interrupt is not None:
            on_interrupt()
        else:
            print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except NoMaskError as exc:
        if debugging():
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return NO_MASK
    except ZsrisError as exc:
        if debugging():
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except BrokenPipeError:  # the reader went away (`zsris-rt ... | head`): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (nothing more is written; exit flushes)
        return BROKEN_PIPE
    except OSError as exc:
        if debugging():
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or _first_line(exc)}{where}", file=sys.stderr)
        return BAD_INPUT
    except Exception as exc:
        if debugging():
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {_first_line(exc)} (a bug; "
              "ZSRIS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return INTERNAL_ERROR
