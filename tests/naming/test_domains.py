"""The Public Suffix List as the agent holds it: registrable domains by the list's three kinds of rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from publicsuffixlist import PSLFILE, PublicSuffixList

from agent.naming.domains import SuffixList, _ascii, registrable


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("www.bbc.co.uk", "bbc.co.uk"),  # a normal rule two labels deep
        ("example.com", "example.com"),
        ("a.b.c.example.com", "example.com"),
        ("x.b.kawasaki.jp", "x.b.kawasaki.jp"),  # "*.kawasaki.jp": b.kawasaki.jp is itself a suffix
        ("x.city.kawasaki.jp", "city.kawasaki.jp"),  # "!city.kawasaki.jp": an exception is registrable
        ("www.test.xn--p1ai", "test.xn--p1ai"),  # .рф, as the DNS carries it
        ("co.uk", None),  # a public suffix has no registrable domain
        ("localhost", None),
        ("host.unlisted-tld", "host.unlisted-tld"),  # the default rule "*"
    ],
)
def test_registrable_domains(name: str, domain: str | None) -> None:
    assert registrable(name) == domain


def test_rules_in_ascii_are_what_the_idna_codec_gives() -> None:
    """Punycode label by label equals the idna codec (with its nameprep) for every rule of the shipped list."""
    lines = Path(PSLFILE).read_text(encoding="utf-8").splitlines()
    rules = [line.split()[0] for line in lines if line.strip() and not line.startswith("//")]
    unicode_rules = [r.lstrip("!*.") for r in rules if not r.isascii()]
    assert len(unicode_rules) > 100
    assert [_ascii(r) for r in unicode_rules] == [r.encode("idna").decode() for r in unicode_rules]


def test_a_small_list_file(tmp_path: Path) -> None:
    path = tmp_path / "psl.dat"
    path.write_text("// comment\nuk\nco.uk\n*.ck\n!www.ck\nрф\n", encoding="utf-8")
    psl = SuffixList(str(path))
    assert [psl.registrable(n) for n in ("a.b.co.uk", "x.y.ck", "a.www.ck", "b.xn--p1ai", "uk")] == ["b.co.uk", "x.y.ck", "www.ck", "b.xn--p1ai", None]


def test_names_under_every_rule_get_the_domain_the_publicsuffixlist_package_gives() -> None:
    """Each rule of the shipped list, and one and two labels under it, against the package's own matcher."""
    lines = Path(PSLFILE).read_text(encoding="utf-8").splitlines()
    rules = [line.split()[0] for line in lines if line.strip() and not line.startswith("//")]
    names = [n for r in rules for base in [_ascii(r.lstrip("!*."))] for n in (base, "a." + base, "b.a." + base)]
    assert len(names) > 30_000
    ours, reference = SuffixList(), PublicSuffixList()
    differ = {n for n in names if ours.registrable(n) != reference.privatesuffix(n)}
    # Where they part, exactly: the base of a wildcard rule that no rule makes a suffix ("nom.br"
    # under "*.nom.br": not a rule itself, nor an exception, nor under another wildcard). The list's
    # algorithm makes its parent's rule ("br") prevail, so it is registrable; the package counts it
    # as a suffix. A name under it ("a.nom.br", "b.a.nom.br") gets the same answer from both.
    plain = {_ascii(r) for r in rules if not r.startswith(("*.", "!"))}
    exceptions = {_ascii(r[1:]) for r in rules if r.startswith("!")}
    wildcard_bases = {_ascii(r[2:]) for r in rules if r.startswith("*.")}
    uncovered = {b for b in wildcard_bases if "." in b and b not in plain | exceptions and b.split(".", 1)[1] not in wildcard_bases}
    assert differ == uncovered
    assert ours.registrable("nom.br") == "nom.br" and reference.privatesuffix("nom.br") is None
