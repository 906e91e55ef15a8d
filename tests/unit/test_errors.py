"""The JSON form of every typed error (``Smile2PayError.to_dict``): what the CLI prints and HTTP returns."""
import json
import math

from smile2pay.errors import MAX_ECHO_CHARS, RequestError, RuleError


def test_error_body_is_strict_json_whatever_the_caller_sent():
    e = RequestError("bad nonce \ud800", code="REQUEST_INVALID", nonce="\udc80", score=math.nan,
                     nested={"k\ud800": [1.5, math.inf, None, True]})
    d = e.to_dict()
    text = json.dumps(d, allow_nan=False, ensure_ascii=False)        # no surrogate, no NaN: strict JSON
    text.encode("utf-8")
    assert d["error"]["code"] == "REQUEST_INVALID" and d["error"]["type"] == "RequestError"
    assert d["error"]["details"]["score"] == "nan" and d["error"]["details"]["nested"]["k\\ud800"][1] == "inf"
    assert d["error"]["details"]["nested"]["k\\ud800"][0] == 1.5


def test_a_huge_echo_is_cut():
    rule = "AU6+" * 50_000
    d = RuleError(f"cannot parse rule {rule!r}", code="RULE_INVALID", rule=rule).to_dict()["error"]
    assert len(d["message"]) < MAX_ECHO_CHARS + 40 and d["message"].endswith(f"({len(repr(rule)) + 18} characters)")
    assert d["details"]["rule"].startswith("AU6+AU6+") and d["details"]["rule"].endswith("(200000 characters)")
    short = RuleError("cannot parse rule 'AU99'", code="RULE_INVALID", rule="AU99").to_dict()["error"]
    assert short["message"] == "cannot parse rule 'AU99'" and short["details"]["rule"] == "AU99"


def test_bad_chars_by_hand():
    """The one character test of caller-given ids and labels: lone surrogates always, controls and DEL on request."""
    from smile2pay.errors import bad_chars

    assert not bad_chars("alice-01 é 漢") and not bad_chars("")
    assert bad_chars("a\ud800b") and bad_chars("a\udfff", controls=False)
    assert bad_chars("a\tb") and not bad_chars("a\tb", controls=False)
    assert not bad_chars("a\x7fb") and bad_chars("a\x7fb", delete=True)
    assert not bad_chars("\U0001F600")           # an astral character is text, not a surrogate pair in Python
