"""The value grammar of every allowed flag agrees with vLLM 0.32's own parser, as its
`vllm serve --help=all` prints it: switches take no metavar, value flags do, the choice lists are
the parser's, and only nargs="+" flags take several words."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from stacks import vllm_flags

HELP = Path(__file__).parents[1] / "fixtures/vllm-0.32.0-serve-help.txt"


def usage() -> dict[str, str]:
    """Each option of the help text and what follows it there (metavar, choices, or nothing)."""
    found: dict[str, str] = {}
    for line in HELP.read_text().splitlines():
        if not re.match(r"^  -", line):
            continue
        head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        for option in re.split(r", (?=-)", head):
            name, _, rest = option.partition(" ")
            found.setdefault(name, rest)
    return found


def choices(rest: str) -> tuple[str, ...]:
    if rest.startswith("{"):
        return tuple(rest[1 : rest.index("}")].split(","))
    if rest.startswith("["):
        return tuple(ast.literal_eval(rest))
    return ()


@pytest.mark.parametrize("flag", sorted(vllm_flags.FLAGS))
def test_each_flag_takes_what_vllms_parser_takes(flag: str) -> None:
    rest = usage()[flag]
    takes = vllm_flags.FLAGS[flag]
    if takes is None:
        assert rest == "", f"{flag} is a switch here but takes {rest!r} in vLLM"
        return
    assert rest, f"{flag} takes a value here but is a switch in vLLM"
    assert takes.many == rest.endswith("...]"), rest
    if takes.choices:
        assert takes.choices == choices(rest)


def test_a_negative_value_is_a_value_only_for_signed_integers() -> None:
    assert vllm_flags.check_extra_args(["--seed", "-1"]) == []
    problems = vllm_flags.check_extra_args(["--max-loras", "-1"])
    assert [p.rule for p in problems][:1] == ["`--max-loras` needs a value: a positive integer"]


def test_an_unknown_flag_is_one_problem_with_its_value() -> None:
    problems = vllm_flags.check_extra_args(["--max-num-seq", "64"])
    assert [p.arg for p in problems] == ["--max-num-seq"]


def test_several_words_belong_to_a_many_valued_flag_only() -> None:
    assert vllm_flags.check_extra_args(["--lora-modules", "a=/x", "b=/y"]) == []
    problems = vllm_flags.check_extra_args(["--seed", "1", "2"])
    assert [p.arg for p in problems] == ["2"]
