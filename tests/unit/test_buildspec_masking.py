"""Secret masking: exact match, inside other text, split across lines, streamed in pieces."""

from __future__ import annotations

from stackyard.secrets.masking import SecretMasker


def streamed(masker: SecretMasker, text: str, size: int) -> str:
    out = "".join(masker.feed(text[i : i + size]) for i in range(0, len(text), size))
    return out + masker.flush()


def test_exact_match_inside_other_text() -> None:
    assert SecretMasker(["s3cr3t"]).mask("token=s3cr3t;") == "token=***;"


def test_split_across_lines_is_masked_per_line() -> None:
    assert SecretMasker(["abcdefgh"]).mask("abc\ndef\ngh\n") == "***\n***\n***\n"


def test_streamed_one_character_at_a_time() -> None:
    masker = SecretMasker(["hunter22"])
    assert streamed(masker, "x hunter22 y\nhun\r\nter\n22 end", 1) == "x *** y\n***\r\n***\n*** end"


def test_only_a_possible_prefix_is_held_back() -> None:
    masker = SecretMasker(["s3cr3t"])
    assert masker.feed("pre s3c") == "pre "
    assert masker.feed("r3t post") == "*** post"
    assert masker.feed(" s3") == " "
    assert masker.flush() == "s3"


def test_longest_secret_wins() -> None:
    assert SecretMasker(["abc", "abcdef"]).mask("abcdef abc") == "*** ***"


def test_no_secrets_passes_text_through() -> None:
    masker = SecretMasker(["", ""])
    assert masker.feed("anything") == "anything"
    assert masker.flush() == ""
