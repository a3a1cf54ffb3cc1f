"""Text folding for moderation: undo the spelling tricks people use to get past a filter.

Two layers, each with one job:

* `fold` works on characters. NFKC folds compatibility forms (fullwidth ``ｎｕｄｅ``, maths
  alphanumerics, ligatures); invisible format characters (zero-width space and joiners, soft
  hyphen, bidi marks) and combining marks (``nüde``, Zalgo noise) are removed; homoglyphs from
  other scripts (Cyrillic ``а``, Greek ``ο``, ...) become the Latin letter they imitate, using the
  Unicode confusables table shipped by the `confusable_homoglyphs` package (kept in step with
  Unicode's own ``confusables.txt``, pure Python, no dependencies). Case is kept, so a caller can
  still see capitalised names.
* `canonical_tokens` works on words. It lower-cases, splits, joins spelled-out words
  (``n u d e``, ``n.u.d.e``, ``r-a-p-e``), and maps a token written with digits or symbols
  (``s3xy``, ``r@pe``, ``up$kirt``), with asterisks (``p*rn``) or stretched letters (``nuuude``)
  onto a word of the moderation vocabulary. The mapping is gated by that vocabulary, so ordinary
  tokens such as ``3d``, ``8k`` or ``1girl`` are never rewritten into something else.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

#: Characters that stand for letters in leetspeak, with the letters they may stand for.
LEET: dict[str, tuple[str, ...]] = {
    "0": ("o",),
    "1": ("i", "l"),
    "2": ("z",),
    "3": ("e",),
    "4": ("a",),
    "5": ("s",),
    "6": ("g",),
    "7": ("t",),
    "8": ("b",),
    "9": ("g",),
    "@": ("a",),
    "$": ("s",),
    "!": ("i", "l"),
    "|": ("l", "i"),
    "+": ("t",),
    "€": ("e",),
    "£": ("l",),
}
_LEET_CHARS = "".join(LEET)
_TOKEN_RE = re.compile(r"[a-z0-9" + re.escape(_LEET_CHARS) + r"*]+")
_SINGLE_RE = re.compile(r"[a-z0-9" + re.escape(_LEET_CHARS) + r"]")
_HAS_LETTER = re.compile(r"[a-z]")
_AGE_TOKEN = re.compile(r"\d+(?:yo|yrs?|y|years?|th|st|nd|rd|s|k|p|d|x|mm|cm|m|fps|gb)?")
_RUN3 = re.compile(r"(.)\1{2,}")
#: Where a word is split: anything that is not a letter, digit, leet character or asterisk.
_SPLIT_RE = re.compile(r"[^a-z0-9" + re.escape(_LEET_CHARS) + r"*]+")
_SPLIT_KEEP_RE = re.compile(r"([^a-z0-9" + re.escape(_LEET_CHARS) + r"*]+)")


@lru_cache(maxsize=1)
def _homoglyph_table() -> dict[int, str]:
    """Map every non-ASCII character that Unicode lists as confusable with an ASCII letter or
    digit to that ASCII character."""
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    data: dict[str, list[dict[str, str]]] = json.loads(raw)
    table: dict[int, str] = {}
    for char, glyphs in data.items():
        if len(char) == 1 and char.isascii() and char.isalnum():
            for glyph in glyphs:
                g = glyph["c"].replace("\u200e", "").replace("\u200f", "")
                if len(g) == 1 and not g.isascii():
                    table.setdefault(ord(g), char)
    # Entries listed the other way round (a non-ASCII key whose homoglyph is ASCII).
    for char, glyphs in data.items():
        if len(char) == 1 and not char.isascii() and ord(char) not in table:
            for glyph in glyphs:
                g = glyph["c"]
                if len(g) == 1 and g.isascii() and g.isalnum():
                    table[ord(char)] = g
                    break
    return table


#: Russian (and Ukrainian) letters in Latin, for words that are Cyrillic text rather than Latin
#: words disguised with Cyrillic look-alikes (after combining marks are gone: й is и here).
_CYRILLIC_LATIN = dict(
    zip(
        "абвгдежзиклмнопрстуфхцчшщъыьэюяіїєґ",
        "a b v g d e zh z i k l m n o p r s t u f kh ts ch sh shch - y - e yu ya i i e g".split(),
        strict=True,
    )
)
_CYRILLIC_WORD = re.compile(r"\w*[\u0400-\u04ff]\w*")


def _transliterate(match: re.Match[str]) -> str:
    """A word with a Cyrillic letter that imitates no Latin one is Cyrillic text: spell it in
    Latin letters ("Голый" -> "Golyi"). A word of look-alikes only ("nudе") is left to the
    homoglyph table."""
    word = match.group(0)
    table = _homoglyph_table()
    if all(ord(ch) in table or not "\u0400" <= ch <= "\u04ff" for ch in word):
        return word
    out = []
    for ch in word:
        latin = _CYRILLIC_LATIN.get(ch.lower())
        if latin is None:
            out.append(ch)
        else:
            latin = latin.strip("-")
            out.append(latin.capitalize() if ch.isupper() else latin)
    return "".join(out)


def fold(text: str) -> str:
    """Fold compatibility forms, invisible characters, accents and homoglyphs; keep case."""
    text = unicodedata.normalize("NFKC", text)
    out = []
    for ch in unicodedata.normalize("NFD", text):
        cat = unicodedata.category(ch)
        if cat in ("Mn", "Me", "Cf"):
            continue  # combining marks, zero-width and other invisible format characters
        if cat in ("Cc", "Zs", "Zl", "Zp"):
            out.append(" ")
            continue
        out.append(ch)
    text = _CYRILLIC_WORD.sub(_transliterate, "".join(out))
    text = text.translate(_homoglyph_table())
    return unicodedata.normalize("NFC", text)


@dataclass(frozen=True)
class Token:
    """One word of the canonical text: `text` is what the vocabulary matched (or the raw word),
    `joined` says it came from a spelled-out run (``n u d e``), which the rules also search for
    words inside (``a n u d e`` contains ``nude``)."""

    text: str
    joined: bool = False
    variants: tuple[str, ...] = ()  # leetspeak readings of a joined run ("l0linsfw")
    brk: int = 0  # punctuation before the word: 2 a sentence break, 1 a comma or colon, 0 none


#: Punctuation that ends a sentence, and punctuation that only separates the parts of one.
_SENTENCE_BREAK = re.compile(r"[.!?;\n]")
_CLAUSE_BREAK = re.compile(r"[,:|()\[\]]")


def _break_level(separator: str) -> int:
    if _SENTENCE_BREAK.search(separator):
        return 2
    return 1 if _CLAUSE_BREAK.search(separator) else 0


def _raw_pieces(lower: str) -> list[tuple[str, int]]:
    """Words with the punctuation before each: 2 after a sentence break, 1 after a comma,
    colon or bracket, else 0 (negation scopes end there; see context.py)."""
    pieces: list[tuple[str, int]] = []
    pending = ""
    for piece in _SPLIT_KEEP_RE.split(lower):
        if _SPLIT_RE.fullmatch(piece):
            pending += piece
            continue
        stripped = piece.strip("!+|*")
        if not stripped:
            pending += piece
            continue
        # Symbols that end or start a word are punctuation, not leetspeak ("wow!", "$5").
        start = piece.index(stripped)
        pending += piece[:start]
        pieces.append((stripped, _break_level(pending)))
        pending = piece[start + len(stripped) :]
    return pieces


def _raw_tokens(lower: str) -> list[str]:
    return [piece for piece, _ in _raw_pieces(lower)]


def _join_runs(pieces: list[tuple[str, int]]) -> list[Token]:
    """Join three or more consecutive one-character tokens (``g o r e``, ``n.u.d.e``)."""
    tokens = [piece for piece, _ in pieces]
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and len(tokens[j]) == 1 and _SINGLE_RE.fullmatch(tokens[j]):
            j += 1
        run = tokens[i:j]
        if len(run) >= 3 and any(_HAS_LETTER.match(t) for t in run):
            out.append(Token("".join(run), joined=True, brk=pieces[i][1]))
            i = j
        else:
            out.append(Token(tokens[i], brk=pieces[i][1]))
            i += 1
    return out


def _leet_variants(token: str, limit: int = 16) -> Iterable[str]:
    options = [LEET.get(ch, (ch,)) for ch in token]
    return itertools.islice(("".join(p) for p in itertools.product(*options)), limit)


def _stretch_variants(word: str) -> list[str]:
    """``nuuuude`` -> ``nuude``, ``nude``. Only runs of three or more are shortened: doubled
    letters are real spelling ("rapping" must not become a word of the vocabulary)."""
    if not _RUN3.search(word):
        return []
    return [_RUN3.sub(r"\1\1", word), _RUN3.sub(r"\1", word)]


class Canonicalizer:
    """Maps raw tokens onto a fixed vocabulary (the rules' words plus names)."""

    def __init__(self, vocabulary: Collection[str]) -> None:
        self.vocabulary = frozenset(vocabulary)
        by_length: dict[int, list[str]] = {}
        for word in self.vocabulary:
            by_length.setdefault(len(word), []).append(word)
        self._by_length = by_length

    def _lookup(self, word: str) -> str | None:
        if word in self.vocabulary:
            return word
        for variant in _stretch_variants(word):
            if variant in self.vocabulary:
                return variant
        return None

    def canonical_word(self, raw: str) -> str:
        if raw in self.vocabulary:
            return raw
        has_letter = bool(_HAS_LETTER.search(raw))
        if "*" in raw.strip("*") and has_letter:
            pattern = re.compile(re.escape(raw).replace(r"\*", "[a-z]"))
            for word in self._by_length.get(len(raw), ()):
                if pattern.fullmatch(word):
                    return word
            return raw.replace("*", "")
        if has_letter and any(ch in LEET for ch in raw) and not _AGE_TOKEN.fullmatch(raw):
            for variant in _leet_variants(raw):
                hit = self._lookup(variant)
                if hit is not None:
                    return hit
            return raw
        if has_letter:
            hit = self._lookup(raw)
            if hit is not None:
                return hit
        return raw

    def tokens(self, folded: str) -> list[Token]:
        lower = folded.casefold()
        out = []
        for tok in _join_runs(_raw_pieces(lower)):
            if tok.joined:
                word = self.canonical_word(tok.text)
                if word in self.vocabulary:
                    out.append(Token(word, brk=tok.brk))
                else:
                    variants = (
                        tuple(v for v in _leet_variants(tok.text) if v != tok.text)
                        if any(ch in LEET for ch in tok.text)
                        else ()
                    )
                    out.append(Token(word, joined=True, variants=variants, brk=tok.brk))
            else:
                out.append(Token(self.canonical_word(tok.text), brk=tok.brk))
        return out


@dataclass(frozen=True)
class Normalized:
    """A prompt after folding: `folded` keeps case (for names), `lower` is its lower-case
    form with punctuation intact (for age patterns), `tokens` the canonical words, and `text` the
    canonical words joined by spaces (what the semantic classifier reads)."""

    original: str
    folded: str
    lower: str
    tokens: tuple[Token, ...]

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.tokens)


def normalize(prompt: str, canonicalizer: Canonicalizer) -> Normalized:
    folded = fold(prompt)
    lower = folded.casefold()
    return Normalized(prompt, folded, lower, tuple(canonicalizer.tokens(folded)))
