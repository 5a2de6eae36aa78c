"""The argument checks: the values each accepts and returns, the edges of each range, and the exact messages the
page shows for the values each refuses."""

import pytest

from uncond.checks import MAX_SEED, check_choice, check_float, check_int, check_text, shown


def refused(check, *args, **kwargs) -> str:
    """The message of the ValueError that `check(*args, **kwargs)` raises."""
    with pytest.raises(ValueError) as error:
        check(*args, **kwargs)
    return str(error.value)


def test_shown_keeps_short_values_whole_and_cuts_long_ones_to_40_characters():
    assert shown("a" * 38) == repr("a" * 38)  # 40 characters with the quotes
    assert shown("a" * 39) == "'" + "a" * 36 + "..."  # 41 would be too many: 37 kept and "..."
    assert len(shown("a" * 39)) == 40 and len(shown("x" * 100_000)) == 40
    assert shown(7) == "7" and shown(None) == "None"


def test_max_seed_is_the_largest_non_negative_64_bit_integer():
    assert MAX_SEED == 9_223_372_036_854_775_807


@pytest.mark.parametrize(
    "value, parse_text, expected",
    [(1, False, 1), (10, False, 10), (10.0, False, 10), (" 7 ", True, 7), ("10", True, 10), ("3.0", True, 3),
     ("1e1", True, 10), (str(MAX_SEED), True, MAX_SEED)],
)  # fmt: skip
def test_check_int_accepts_whole_numbers_in_range(value, parse_text, expected):
    high = MAX_SEED if expected == MAX_SEED else 10
    number = check_int("Steps", value, 1, high, parse_text=parse_text)
    assert number == expected and type(number) is int


def test_check_int_parses_big_seeds_exactly():
    # float(MAX_SEED - 1) would round to 2**63 and fail the range check, or change the seed
    assert check_int("Seed", str(MAX_SEED - 1), 0, MAX_SEED, parse_text=True) == MAX_SEED - 1


@pytest.mark.parametrize(
    "value, parse_text",
    [(0, False), (11, False), (-1, False), (1.5, False), (float("nan"), False), (float("inf"), False),
     (True, False), (False, False), (None, False), ("7", False), ("seven", True), ("", True), ("1.5", True),
     ("11", True), ("nan", True), ([3], True)],
)  # fmt: skip
def test_check_int_refuses_with_a_message_naming_the_argument_and_range(value, parse_text):
    message = refused(check_int, "Steps", value, 1, 10, parse_text=parse_text)
    assert message == f"Steps must be a whole number from 1 to 10, got {shown(value)}."


def test_check_int_message_shows_long_text_cut():
    message = refused(check_int, "Seed", "x" * 100_000, 0, 5, parse_text=True)
    assert message == "Seed must be a whole number from 0 to 5, got '" + "x" * 36 + "...."


@pytest.mark.parametrize(
    "value, parse_text, expected",
    [(0, False, 0.0), (0.0, False, 0.0), (1, False, 1.0), (0.25, False, 0.25), ("0.5", True, 0.5),
     (" 1 ", True, 1.0), ("1e-1", True, 0.1)],
)  # fmt: skip
def test_check_float_accepts_numbers_in_range_inclusive(value, parse_text, expected):
    number = check_float("Eta", value, 0.0, 1.0, parse_text=parse_text)
    assert number == expected and type(number) is float


@pytest.mark.parametrize(
    "value, parse_text",
    [(-0.01, False), (1.01, False), (float("nan"), False), (float("inf"), False), (True, False), (None, False),
     ("0.5", False), ("half", True), ("", True), ("nan", True), ("2", True), ([0.5], True)],
)  # fmt: skip
def test_check_float_refuses_with_a_message_naming_the_argument_and_range(value, parse_text):
    message = refused(check_float, "Eta", value, 0.0, 1.0, parse_text=parse_text)
    assert message == f"Eta must be a number from 0 to 1, got {shown(value)}."


def test_check_float_message_formats_the_range_short():
    assert refused(check_float, "Guidance scale", 30.5, 0.0, 30.0) == (
        "Guidance scale must be a number from 0 to 30, got 30.5."
    )
    assert refused(check_float, "x", 0.0, 0.125, 1e6) == "x must be a number from 0.125 to 1e+06, got 0.0."


def test_check_choice_returns_the_value_or_the_dicts_entry():
    assert check_choice("Scheduler", "ddim", ["ddpm", "ddim"]) == "ddim"
    assert check_choice("Scheduler", "ddim", ("ddpm", "ddim")) == "ddim"
    assert check_choice("Scheduler", "DDIM (fast)", {"DDPM": 1, "DDIM (fast)": 2}) == 2


@pytest.mark.parametrize("value", ["euler", "", None, 3, ["ddim"]])
def test_check_choice_refuses_other_values_listing_the_choices(value):
    message = refused(check_choice, "Scheduler", value, {"ddpm": 1, "ddim": 2})
    assert message == f"Scheduler must be one of ddpm, ddim, got {shown(value)}."


def test_check_text_accepts_text_up_to_the_limit_with_tabs_and_line_breaks():
    assert check_text("Prompt", "", 5) == ""
    assert check_text("Prompt", "a\tb\nc", 5) == "a\tb\nc"
    assert check_text("Prompt", "x\r\ny", 4) == "x\r\ny"
    assert check_text("Prompt", "😀 é", 3) == "😀 é"  # characters, not bytes


def test_check_text_refuses_non_text_and_long_text():
    assert refused(check_text, "Prompt", 3, 10) == "Prompt must be text, got 3."
    assert refused(check_text, "Prompt", None, 10) == "Prompt must be text, got None."
    assert refused(check_text, "Prompt", "abcdef", 5) == "Prompt must be at most 5 characters, got 6."


@pytest.mark.parametrize(
    "text, code, position", [("\x00", "0000", 0), ("ab\x1bc", "001B", 2), ("ok\x7f", "007F", 2), ("a\x85", "0085", 1)]
)
def test_check_text_refuses_control_characters_naming_the_first(text, code, position):
    message = refused(check_text, "Prompt", text + "\x01", 20)
    assert message == f"Prompt must not contain control characters, found U+{code} at position {position}."


def test_text_is_refused_unless_parse_text_is_asked_for():
    # the pipelines' default: a caller's "7" for a number is a bug they hear about
    assert refused(check_int, "Steps", "7", 1, 10) == "Steps must be a whole number from 1 to 10, got '7'."
    assert refused(check_float, "Eta", "0.5", 0.0, 1.0) == "Eta must be a number from 0 to 1, got '0.5'."


def test_check_choice_takes_choices_of_any_hashable_kind():
    assert check_choice("variance_type", 2, (1, 2)) == 2
    assert refused(check_choice, "variance_type", 5, (1, 2)) == "variance_type must be one of 1, 2, got 5."
    assert refused(check_choice, "Model", ["a"], ["a", "b"]) == "Model must be one of a, b, got ['a']."
