"""Scripts that travel inside a command line: `<interpreter> -c <source> <name> ARGS`.

Carried in the command rather than copied to the host, a changed script is a changed command, so
it re-runs, and nothing is left behind. The word after the source names the script: `sh` and
`bash` set `$0` to it (POSIX sh(1), `sh -c command_string [command_name [argument...]]`), so
their own error messages say which script failed. Python has no such word (with `-c`,
`sys.argv[0]` is "-c" and the arguments follow, python(1)), so a Python script shipped this way
skips `sys.argv[1]`, its name. The render saves each script under its name
(`tools/synth.py`, `Synth.files`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

# A plain file name: it is a file name in the render, and never read as an option.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def argv(interpreter: str, source: str, name: str, args: Sequence[str] = ()) -> list[str]:
    if not _NAME.match(name):
        raise ValueError(f"inline script name {name!r}: must be a plain file name such as `verify.sh`")
    return [interpreter, "-c", source, name, *args]


def script_of(command: str) -> tuple[str, str] | None:
    """(name, source) of the script a command line carries, or None for a plain command."""
    words = shlex.split(command)
    if "-c" not in words:
        return None
    at = words.index("-c")
    if at + 2 >= len(words) or not _NAME.match(words[at + 2]):
        # Only the words before the script: the source itself is long.
        before = shlex.join(words[:at])
        raise ValueError(f"`{before} -c` carries a script with no name after it: build it with components.inline.argv")
    return words[at + 2], words[at + 1]
