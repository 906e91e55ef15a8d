"""AU rule language: which action units must be present, and which must not.

Grammar (whitespace is ignored between terms)::

    rule     := term (sep term)*
    term     := AU            -> required
              | "-" AU | "!" AU  -> forbidden
    sep      := "+" | "," | " " (or nothing before "-"/"!")
    AU       := "AU" digits     (case-insensitive; "AU06" == "AU6")

Examples: ``"AU6+AU12"`` (a Duchenne smile), ``"AU12"``, ``"AU6+AU12-AU4"``, ``"AU6+AU12 !AU4"``.
Parsed once into a :class:`Rule`; errors are :class:`RuleError` with the offending text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import RuleError
from ..models.manifest import AU_NAMES

#: Action units a rule may name by default: the ones the shipped AU model outputs (declared in its manifest
#: entry, smile2pay.models.manifest.AU_NAMES). A caller running another AU model passes that model's
#: ``au_names`` as ``parse_rule(..., known=...)``; this package never loads a model itself.
KNOWN_AUS: tuple[str, ...] = AU_NAMES

_TOKEN = re.compile(r"\s*([+,]?)\s*([-!]?)\s*(AU)(\d{1,3})\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    required: tuple[str, ...]
    forbidden: tuple[str, ...] = ()

    @property
    def aus(self) -> tuple[str, ...]:
        return self.required + self.forbidden

    def __str__(self) -> str:
        s = "+".join(self.required)
        if self.forbidden:
            s += "".join(f"-{a}" for a in self.forbidden)
        return s

    def satisfied(self, present: dict[str, bool]) -> bool:
        """``present``: AU -> whether it is judged present."""
        return all(present.get(a, False) for a in self.required) and not any(
            present.get(a, False) for a in self.forbidden)


def parse_rule(text: str, known: Iterable[str] | None = None) -> Rule:
    """Parse ``text`` into a :class:`Rule`. ``known``: the AU names the AU model outputs (default
    :data:`KNOWN_AUS`, the shipped model's); an AU outside them is ``RULE_UNKNOWN_AU``."""
    known = KNOWN_AUS if known is None else tuple(known)
    if isinstance(text, Rule):
        unknown = [a for a in text.aus if a not in known]
        if unknown:
            raise RuleError(f"unknown action unit {unknown[0]} in rule {str(text)!r}; known: {', '.join(known)}",
                            code="RULE_UNKNOWN_AU", rule=str(text), au=unknown[0])
        return text
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"an AU rule must be a non-empty string such as 'AU6+AU12', got {text!r}",
                        code="RULE_INVALID", rule=str(text))
    pos, required, forbidden = 0, [], []
    s = text.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise RuleError(f"cannot parse AU rule {text!r} at position {pos}: {s[pos:pos + 12]!r}; "
                            f"write e.g. 'AU6+AU12' or 'AU6+AU12-AU4'", code="RULE_INVALID", rule=text,
                            position=pos)
        sep, neg, _, num = m.groups()
        if pos == 0 and sep:
            raise RuleError(f"AU rule {text!r} starts with {sep!r}", code="RULE_INVALID", rule=text)
        au = f"AU{int(num)}"
        if au not in known:
            raise RuleError(f"unknown action unit {au} in rule {text!r}; known: {', '.join(known)}",
                            code="RULE_UNKNOWN_AU", rule=text, au=au)
        (forbidden if neg else required).append(au)
        pos = m.end()
    if not required:
        raise RuleError(f"AU rule {text!r} requires nothing; name at least one AU that must be present",
                        code="RULE_INVALID", rule=text)
    dup = set(required) & set(forbidden)
    if dup:
        raise RuleError(f"AU rule {text!r} both requires and forbids {sorted(dup)}", code="RULE_INVALID",
                        rule=text)
    if len(set(required)) != len(required) or len(set(forbidden)) != len(forbidden):
        raise RuleError(f"AU rule {text!r} names an AU twice", code="RULE_INVALID", rule=text)
    return Rule(tuple(required), tuple(forbidden))
