"""Context that changes what a word means: negation, drink names, medical education.

The lexicon matches words; these three readings of the words around them are what a word list
cannot express, and each was a source of refused safe prompts under ``nsfw_check``:

* **Negation.** "a medieval battle, no gore", "fully clothed, no nudity", "without blood or
  gore", "Negative prompt: nsfw, nude". A negator masks the category words in its scope: the
  words right after it, joined by "or", "and", "nor" or "/", up to the next comma or sentence
  break; "gore-free" likewise. In a "Negative prompt:" (or "Negative:") section the scope is the
  rest of the sentence. Only words that *name* strict-mode content can be negated (``NEGATABLE``:
  nudity, gore, blood, violence, ...): never words about minors or sexual violence, never
  clothes ("no clothes" stays nudity), and never specific acts ("no gore and decapitated heads"
  still counts "decapitated").
* **Drink names.** "Sex on the Beach", "Porn Star Martini", "Slippery Nipple", "Bloody Mary":
  with a drink word anywhere in the prompt (cocktail, glass, bar, shot, ...) the name is a
  drink. A name that a rule phrase straddles ("having sex on the beach") is not masked.
* **Medical education.** With a medical or teaching context (diagram, anatomy, clinic,
  breastfeeding, ...), anatomical words ("vulva", "nipple", "penis") are anatomy: they no
  longer decide ``explicit_sexual`` alone, and the semantic classifier reads them as
  "anatomy". In the rules they still combine with a minor, a real person or force into the
  basic categories exactly as before: the context never weakens those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .normalize import Token

#: Words that negate what follows them.
NEGATORS = frozenset(
    "no not non without zero nothing nobody none avoid avoiding never minus nor".split()
)
#: Words that may sit between a negator and what it negates ("no graphic violence").
_FILLERS = frozenset(
    "any graphic visible real actual overt obvious excessive much too a an the of "
    "shown depicted showing displayed".split()
)
_JOINERS = frozenset("or and nor".split())
#: Words that name strict-mode content, so that "no X" means the prompt wants none of it.
NEGATABLE = frozenset(
    """
    nudity nude nudes naked nakedness nsfw nipple nipples cleavage topless
    sex sexual sexuality sexy explicit erotic erotica lewd porn porno pornography pornographic
    smut fanservice suggestive provocative sensual seductive genitals genitalia
    gore gory blood bloody bloodshed violence violent brutality brutal injury injuries wound
    wounds corpse corpses bodies death deaths killing killings dismemberment mutilation
    decapitation guts
    """.split()
)
#: "gore free", "gore-free": a negation that follows the word.
_POSTFIX_NEGATORS = frozenset({"free"})
_NEGATIVE_SECTION = ("negative",)  # "Negative prompt: ...", "negative: ..."

#: Drink names whose words mean something else elsewhere (matched as token sequences).
DRINK_NAMES: tuple[tuple[str, ...], ...] = tuple(
    tuple(name.split())
    for name in (
        "sex on the beach",
        "sex on the beach cocktail",
        "porn star martini",
        "pornstar martini",
        "screaming orgasm",
        "multiple orgasm",
        "slippery nipple",
        "buttery nipple",
        "dirty nipple",
        "naked and famous",
        "the naked and famous",
        "naked lady",
        "blow job",
        "blowjob",
        "between the sheets",
        "sex in the driveway",
        "sex with an alligator",
        "bloody mary",
        "bloody maria",
        "bloody caesar",
        "bloody marys",
        "corpse reviver",
        "angel s tit",
        "angels tit",
        "brain hemorrhage",
        "bleeding heart",
        "zombie",
        "suffering bastard",
        "death in the afternoon",
        "hanky panky",
        "leg spreader",
    )
)
#: Words that show a drink is meant.
DRINK_CONTEXT = frozenset(
    """
    cocktail cocktails mocktail mocktails drink drinks glass glasses shot shots shooter
    shooters martini martinis bar bartender bartenders barman mixologist menu recipe garnish
    garnished coupe highball tumbler tiki rum vodka gin tequila whiskey whisky liqueur
    sambuca schnapps prosecco champagne brunch ice umbrella umbrellas straw happy hour
    """.split()
)
#: Words that make anatomy a subject of medicine or teaching.
MEDICAL_CONTEXT = frozenset(
    """
    anatomy anatomical anatomic diagram diagrams medical medicine clinic clinical clinician
    textbook leaflet infographic patient patients doctor doctors physician nurse nurses
    midwife midwifery obstetrics obstetric gynecology gynaecology gynecologist gynaecologist
    urology urologist surgeon surgery surgical histology physiology biology labeled labelled
    cross section breastfeeding breastfeed lactation mammogram screening examination exam
    self health healthcare hospital pharmacy diagnosis symptoms treatment education
    educational lecture course students curriculum pediatric paediatric cancer awareness
    dermatology dermatologist oncology prosthetic diagram infection
    """.split()
)
#: Anatomical words of the EXPLICIT group, which medical context reads as anatomy.
ANATOMY = frozenset(
    """
    genitals genitalia penis penises vagina vaginas vulva nipple nipples areola areolas
    erection
    """.split()
)


@dataclass
class Context:
    """What the context changes for one prompt's tokens."""

    #: Token indexes whose words do not count (negated category words, drink names).
    masked: set[int] = field(default_factory=set)
    #: Token indexes the semantic copy of the text leaves out (negations with their scope).
    dropped: set[int] = field(default_factory=set)
    #: Token index -> the word the semantic copy reads there ("cocktail" for a drink name).
    substitutes: dict[int, str] = field(default_factory=dict)
    #: Whether the prompt is about medicine or teaching (anatomy is not nudity then).
    medical: bool = False


def _negations(tokens: Sequence[Token], out: Context) -> None:
    words = [t.text for t in tokens]
    n = len(words)
    i = 0
    while i < n:
        word = words[i]
        if (
            word in _NEGATIVE_SECTION
            and i + 1 < n
            and (
                words[i + 1] in ("prompt", "prompts")
                or ((i == 0 or tokens[i].brk > 0) and tokens[i + 1].brk == 1)
            )
        ):
            # "Negative prompt: a, b, c": everything up to the end of the sentence.
            j = i + 1
            while j < n and not (j > i + 1 and tokens[j].brk == 2):
                if words[j] in NEGATABLE:
                    out.masked.add(j)
                j += 1
            out.dropped.update(range(i, j))
            i = j
            continue
        if word in NEGATORS:
            j, last = i + 1, None
            while j < n and tokens[j].brk == 0:
                if words[j] in NEGATABLE:
                    out.masked.add(j)
                    last = j
                elif words[j] not in _FILLERS and words[j] not in _JOINERS:
                    break
                j += 1
            if last is not None:
                out.dropped.update(range(i, last + 1))
                i = last + 1
                continue
        if word in _POSTFIX_NEGATORS and i > 0 and tokens[i].brk == 0 and words[i - 1] in NEGATABLE:
            out.masked.add(i - 1)
            out.dropped.update((i - 1, i))
        i += 1


def _drink_names(
    tokens: Sequence[Token], straddled: Sequence[tuple[int, int]], out: Context
) -> None:
    words = [t.text for t in tokens]
    if not DRINK_CONTEXT.intersection(words):
        return
    n = len(words)
    for i in range(n):
        for name in DRINK_NAMES:
            end = i + len(name)
            if tuple(words[i:end]) != name:
                continue
            if any(s < i < e or s < end < e for s, e in straddled):
                continue  # "having sex on the beach": a rule phrase reaches into the name
            out.masked.update(range(i, end))
            out.dropped.update(range(i + 1, end))
            out.substitutes[i] = "cocktail"


def read_context(tokens: Sequence[Token], phrase_spans: Sequence[tuple[int, int]]) -> Context:
    """The context of a prompt's canonical tokens; `phrase_spans` are the lexicon's matches
    (start, end) before any masking, so a drink name that one of them straddles stays text."""
    out = Context()
    _negations(tokens, out)
    _drink_names(tokens, phrase_spans, out)
    out.medical = bool(MEDICAL_CONTEXT.intersection(t.text for t in tokens))
    if out.medical:  # the semantic copy reads the anatomy as what it is here
        for i, token in enumerate(tokens):
            if token.text in ANATOMY:
                out.substitutes.setdefault(i, "anatomy")
    return out
