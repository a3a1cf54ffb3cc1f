"""The words the rules know, by group. Data only; `rules.py` says how groups combine.

Every entry is lower-case; phrases are separated by commas and matched word by word on
the canonical text (so ``rape`` never matches ``grape`` or ``therapist``). A
hyphenated spelling is matched as separate words (``non-consensual`` -> ``non consensual``).
"""

from __future__ import annotations

# --- sexual content ---------------------------------------------------------------------------

#: Nudity and explicit sexual content: enough on its own for ``explicit_sexual``.
EXPLICIT = """
nude, nudes, naked, nudity, topless, bottomless, undressed, unclothed, undressing, undress,
without clothes, without any clothes, no clothes, no clothing, not wearing anything,
wearing nothing, birthday suit, in the nude, fully nude, completely nude, full frontal, nsfw,
porn, porno, porns, pornography, pornographic, pornstar, porn star, xxx, pron, noodz, nudez,
sex, sexual intercourse, intercourse, having sex, have sex, has sex, sex scene, sex act,
sex acts, sexual act, sexual acts, sexually explicit, explicit sex, sex tape, sex video,
sex toy, sex toys, making love, make love, lovemaking, erotic, erotica, hentai, ecchi, orgy,
orgies, threesome, gangbang, blowjob, handjob, fellatio, cunnilingus, masturbating,
masturbation, masturbate, masturbates, genitals, genitalia, penis, penises, vagina, vaginas,
vulva, erection, erect penis, nipple, nipples, areola, areolas, bare breasts, exposed breasts,
naked breasts, boobs, tits, titties, cum, cumshot, creampie, dildo, vibrator,
onlyfans, striptease, strip tease, stripper, strippers, stripping naked, lewd, smut, nudist,
nudists, adult film, adult video, adult movie, bdsm, to strip, strip naked, strips naked,
stripped naked, stripping off, clothes off, clothes ripped off, clothes torn off,
tearing off her clothes, ripping off her clothes, tear off her clothes, rip off her clothes,
tore off her clothes, ripped off her clothes, taking off her clothes, takes off her clothes,
took off her clothes, removing her clothes, remove her clothes, tearing off his clothes,
ripping off his clothes, taking off his clothes
, doing the deed, getting it on, in the buff
"""

#: Sexualising words that are not explicit alone (``sexy``, ``lingerie``): they decide a
#: category only together with a minor, a real person, or force.
SUGGESTIVE = """
sexy, seductive, seductively, sensual, sultry, provocative, provocatively, suggestive,
suggestively, lingerie, underwear, panties, bra, thong, g string, sexual, sexually, sexualized,
sexualised, in a sexual pose, sexual pose, sexy pose, erotic pose, lewd pose
"""

#: Modifiers that ask for explicit content without saying what (weak alone).
EXPLICIT_WEAK = """
explicit, uncensored, r18, rule 34, 18 plus, x rated
"""

#: Other languages, in Latin script (prompts are folded, so without accents). The semantic
#: classifier reads English only, so these words carry such prompts alone.
EXPLICIT_OTHER_LANGUAGES = """
nackt, nackte, nackter, nacktes, nackten, nacktfoto, nacktbilder, ohne kleidung, desnuda,
desnudo, desnudas, desnudos, desnudez, sin ropa, nue, nues, toute nue, sans vetements,
sans aucun vetement, nuda, nude integrale, senza vestiti, nua, nuas, sem roupa, sexo, sesso,
sexe, pornografia, pornographie, pornografico, pornografica, голый, голая, голое, голые,
голую, голого, голышом, обнаженная, обнаженный, обнаженные, обнаженное, нагая, нагой, секс,
порно, эротика, эротическое, эротическая
"""
EXPLICIT_WEAK_OTHER_LANGUAGES = """
explizit, explicito, explicita, explicite, esplicito, esplicita, unzensiert, sin censura,
откровенное, откровенная, откровенный, без цензуры
"""
SEXUAL_VIOLENCE_OTHER_LANGUAGES = """
vergewaltigung, vergewaltigt, vergewaltigen, vergewaltiger, violacion, violada, violado,
violar, violador, viol d une, viol de, un viol, le viol, violee, violer, violeur, stupro,
stuprata, stuprare, violentata, estupro, estuprada, abuso sexual, agresion sexual,
agression sexuelle, sexuelle gewalt, sexueller missbrauch, violenza sessuale,
violencia sexual, gegen ihren willen, contra su voluntad, contre son gre, sans son consentement,
sin su consentimiento, contro la sua volonta, изнасилование, изнасилования, изнасиловать,
изнасилована, изнасиловал, изнасилуют, сексуальное насилие, против ее воли
"""
GORE_OTHER_LANGUAGES = """
zerstuckelt, zerstuckelte, zerstuckelter, zerstuckelten, gedarme, eingeweide, enthauptet,
verstummelt, verstummelte, descuartizado, descuartizada, descuartizados, tripas fuera, visceras,
decapitado, decapitada, mutilado, mutilada, desmembrado, desmembrada, mutile, mutilee, mutiles,
decapite, decapitee, demembre, entrailles, organes a l air, sbudellato, squartato, squartata,
mutilato, mutilata, decapitato, viscere, расчлененный, расчлененное, расчлененная, расчлененка,
кишки, обезглавленный, обезглавленная, обезглавлен, изуродованный труп, вспоротый живот
"""

# --- minors -----------------------------------------------------------------------------------

MINOR = """
child, children, childs, kid, kids, kiddo, kiddos, kiddie, kiddies, toddler, toddlers, infant,
infants, baby, babies, newborn, preteen, preteens, pre teen, pre teens, tween, tweens, teen,
teens, teenager, teenagers, teenage, underage, under age, minor, minors, schoolgirl,
schoolgirls, schoolboy, schoolboys, school girl, school girls, school boy, school boys,
little girl, little girls, little boy, little boys, young girl, young girls, young boy,
young boys, prepubescent, pubescent, adolescent, adolescents, juvenile, youngster, youngsters,
middle school, middle schooler, middle schoolers, elementary school, grade schooler,
kindergartener, kindergartner, kindergarteners, preschooler, preschoolers, first grader,
second grader, third grader, fourth grader, fifth grader, sixth grader, seventh grader,
eighth grader, ninth grader, loli, lolis, shota, shotas, yung girl
"""
# Ages come from a pattern in rules.py ("12 year old", "13yo", "aged 11", "twelve-year-old").

#: Words that mean sexualised minors on their own.
MINOR_SEXUAL = """
lolicon, shotacon, child porn, child pornography, kiddie porn, kiddy porn, underage porn,
pedophile, pedophiles, paedophile, paedophiles, pedo, pedos, pedophilia, paedophilia, jailbait,
barely legal
"""

# --- sexual violence --------------------------------------------------------------------------

#: Sexual violence and non-consent, enough on its own.
SEXUAL_VIOLENCE = """
rape, rapes, raped, raping, rapist, rapists, gang rape, gangrape, date rape, sexual assault,
sexual assaults, sexually assault, sexually assaulted, sexually assaulting, sexual abuse,
sexually abused, sexually abusing, sexual violence, sexually violated, sexual torture,
sexual exploitation, sexually exploited, molest, molests, molested, molesting, molestation,
molester, molesters, non consensual, nonconsensual, non con, noncon, nonconsent, non consent,
upskirt, upskirts, downblouse, creepshot, creepshots, creep shot, revenge porn, sex slave,
sex slaves, sexual slavery, forced sex, forced nudity, forced prostitution, grope, groped,
groping, groper
, ravish, ravished, ravishes, had his way with her, has his way with her,
have his way with her, having his way with her, begs him to stop, begging him to stop,
begged him to stop, too drunk to consent, too drunk to say yes, too drunk to say no,
spiked her drink, slipped something in her drink, date rape drug, leaked nudes,
stolen nudes, nudes stolen, nude photos stolen, nude pictures stolen, hacked nudes,
leaked sex tape
"""

#: Force, coercion, incapacity and covert filming: sexual violence with a sexual word.
FORCE = """
forced, forcing, forcibly, against her will, against his will, against their will,
without consent, without her consent, without his consent, without their consent, coerced,
coercion, held down, holding her down, pinned down, pinned to, drugged, roofied,
unconscious, passed out, kidnapped, abducted, captive, captives, at gunpoint, at knifepoint,
blackmailed, resisting, victim, victims, hidden camera, hidden cam,
spy cam, spycam, spy camera, secretly filmed, secretly filming, secretly photographed, voyeur,
voyeurism, peeping, peeping tom, violated, attacker, attackers, abuser,
tearing off, ripping off, tear off, rip off
"""

#: Covert filming, and the private places it becomes voyeurism in (both needed).
COVERT = """
hidden camera, hidden cam, spy cam, spycam, spy camera, secretly filmed, secretly filming,
secretly photographed, secretly recorded, voyeur, voyeurism, peeping, peeping tom,
without her knowing, without her knowledge, through the window, through a window
"""
PRIVATE_PLACE = """
shower, showering, showers, bathroom, changing room, changing rooms, locker room, toilet,
restroom, undressing, getting undressed, changing clothes, bath, bathing, skirt, dress, bedroom
"""

#: Context that marks a prompt about fighting sexual violence rather than depicting it.
ADVOCACY = """
awareness, prevention, campaign, campaigns, survivor, survivors, hotline, helpline, charity,
support group, protest, march, ribbon, education, workshop, counseling, counselling, shelter
"""

#: Words that show a depiction rather than a topic ("rape scene", "woman being ...").
DEPICTION = """
scene, being, getting, gets, while, photo of, image of, picture of, video of, depicting,
footage
"""

# --- gore -------------------------------------------------------------------------------------

GORE = """
gore, gory, goregrind, decapitated, decapitation, decapitate, beheaded, beheading, beheadings,
dismembered, dismemberment, dismember, dismembering, disemboweled, disembowelled, disembowel,
disembowelment, eviscerated, evisceration, entrails, guts spilling, spilled guts,
spilling guts, blood and guts, guts everywhere, mutilated, mutilation, mutilating,
skinned alive, flayed, flaying, brain matter, brains splattered, exposed bones, exposed bone,
exposed organs, exposed brain, torn flesh, ripped flesh, gaping wound, gaping wounds, cannibal,
cannibals, cannibalism, human flesh, eating flesh, gouged out, gouged, eye gouged, slit throat,
throat slit, mangled corpse, mangled body, mangled bodies, bloodbath, blood bath,
crushed skull, rotting corpse, decomposed body,
decomposing body, severed head, severed heads, severed limb, severed limbs, severed arm,
severed arms, severed leg, severed legs, severed hand, severed hands, severed finger,
severed fingers, intestines spilling, spilling intestines,
spilled intestines, intestines spilled
, innards, insides hanging out, insides spilling out, organs hanging out,
guts hanging out, intestines hanging out, entrails hanging out, vivisected, vivisection,
unzipped from throat to groin
"""

#: Graphic but weaker alone: decide only in strict mode (and with the semantic classifier).
GORE_MEDIUM = """
pool of blood, covered in blood, soaked in blood, blood soaked, blood splatter, blood spatter,
splattered blood, blood everywhere, massacre, massacred, slaughtered, tortured, severed,
impaled
"""

#: Body parts and injuries; a part with an injury is graphic gore ("head cut off").
BODY_PART = """
head, heads, arm, arms, leg, legs, limb, limbs, hand, hands, finger, fingers, eye, eyes,
eyeball, eyeballs, face, faces, skull, skulls, brain, brains, organs, organ, bones, bone,
throat, flesh, skin, body, bodies, torso, stomach, chest, belly, neck, ear, ears
"""
INJURY = """
cut off, chopped off, ripped off, torn off, sliced off, blown off, hacked off, sawn off, cut open,
ripped open, torn open, split open, sliced open, torn apart, ripped apart, blown apart,
peeled off, peeled away, gouged, severed, cut into pieces, chopped into pieces,
hacked to pieces, torn to pieces, ripped to pieces, blown to pieces, cut to pieces
"""

# --- sense exceptions -------------------------------------------------------------------------
# A phrase here masks the word it names, so the senses below never count: the colour nude, the
# naked mole rat, the Sex Pistols, paint stripper, baby blue, a minor key, Al Gore, ...

_NUDE_NEXT = """
colour color colours colors palette palettes tone tones toned shade shades lipstick lipsticks
lip lips gloss heels heel pumps shoes shoe sandals boots flats beige makeup nail nails polish
paint wall walls blush pink eyeshadow foundation tights stockings hue hues neutral neutrals
scheme swatch swatches dress dresses gown blouse leather suede fabric linen silk satin tan
bodysuit bra mesh colored coloured
"""
_NAKED_NEXT = """
eye eyes mole flame flames cake cakes truth chef branches branch tree trees wire wires ambition
lunch singularity bulb lightbulb neck necked
"""

_COLOURS = """
terracotta beige white black pink blush gold golden cream brown grey gray olive sage taupe ivory
camel rust peach coral tan caramel mauve blue green navy sand stone oatmeal champagne rose
"""

SENSE_EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "nude": tuple(f"nude {w}" for w in _NUDE_NEXT.split() + _COLOURS.split())
    + tuple(f"nude and {w}" for w in _COLOURS.split())
    + tuple(f"{w} and nude" for w in _COLOURS.split())
    + tuple(
        f"{w} nude"
        for w in (
            "beige",
            "blush",
            "warm",
            "soft",
            "neutral",
            "shades of",
            "shade of",
            "tones of",
            "colour",
            "color",
            "and",
        )
    ),
    "naked": tuple(f"naked {w}" for w in _NAKED_NEXT.split()),
    "sex": (
        "sex pistols",
        "sex education",
        "sex ed",
        "sex and the city",
        "sex and gender",
        "same sex",
        "opposite sex",
        "sex chromosomes",
        "sex on the beach cocktail",
        "sex symbols",
        "sex symbol",
    ),
    "porn": tuple(
        f"{w} porn"
        for w in (
            "food",
            "earth",
            "cabin",
            "architecture",
            "city",
            "sky",
            "space",
            "room",
            "car",
            "gear",
            "book",
            "plant",
            "map",
        )
    ),
    "stripper": (
        "paint stripper",
        "wire stripper",
        "varnish stripper",
        "wallpaper stripper",
        "stripper clip",
    ),
    "rape": ("oilseed rape",),
    "baby": (
        "baby blue",
        "baby pink",
        "baby shower",
        "baby spinach",
        "baby carrots",
        "baby carrot",
        "baby grand",
        "baby breath",
        "baby s breath",
        "baby back ribs",
        "baby oil",
        "baby bump",
    ),
    "kid": ("kid gloves", "karate kid", "kid leather", "kid goat", "kid goats"),
    "teen": ("teen titans",),
    "teenage": ("teenage mutant",),
    "minor": tuple(
        f"minor {w}"
        for w in (
            "league",
            "leagues",
            "key",
            "keys",
            "chord",
            "chords",
            "scale",
            "injury",
            "injuries",
            "planet",
            "planets",
            "detail",
            "details",
            "road",
            "roads",
            "character",
            "characters",
            "change",
            "changes",
            "issue",
            "issues",
            "repairs",
            "flaw",
            "flaws",
            "note",
            "third",
            "arcana",
            "prophets",
            "car",
            "accident",
            "surgery",
        )
    )
    + tuple(
        f"{w} minor"
        for w in ("ursa", "asia", "c", "d", "e", "f", "g", "b", "flat", "sharp", "in a")
    ),
    "gore": ("al gore", "gore tex", "gore vidal", "gore verbinski"),
    "corpse": ("corpse bride", "corpse flower", "corpse paint", "corpse reviver"),
    "massacre": ("texas chainsaw massacre",),
    "explicit": ("explicit lyrics", "explicit content label", "parental advisory explicit"),
    "cum": ("cum laude", "summa cum", "magna cum"),
    "tits": ("blue tits", "great tits", "coal tits", "long tailed tits", "marsh tits"),
    "erection": ("erection of",),
    "nipples": ("nipples of venus",),
    "sexual": (
        "sexual health",
        "sexual orientation",
        "sexual education",
        "sexual reproduction",
        "sexual selection",
        "sexual dimorphism",
        "sexual harassment awareness",
    ),
    "sexually": ("sexually transmitted",),
    "bra": ("sports bra", "sports bras"),
    "thong": ("thong sandals", "thong sandal"),
}

#: What a masked word means in its exception, for the semantic classifier's copy of the text
#: (so "nude colour palette" reaches the encoder as "beige colour palette").
SENSE_SUBSTITUTES: dict[str, str] = {
    "nude": "beige",
    "naked": "bare",
    "sex": "gender",
    "porn": "photography",
    "stripper": "remover",
    "rape": "canola",
    "cum": "with",
    "tits": "titmice",
    "erection": "construction",
    "sexual": "personal",
    "sexually": "commonly",
    "bra": "top",
    "thong": "flip flop",
    "corpse": "ghoulish",
    "explicit": "clear",
}

#: Words before a name that make the name an attribution, not the subject ("in the style of").
ATTRIBUTION = """
by, style, styled, manner, after, inspired, artist, painter, painted, photographer,
photographed, drawn, illustrated, directed, homage, la
"""

#: Common words that the canonicaliser may restore from leetspeak, so the semantic classifier
#: reads ``m4n`` as ``man``. (Rule words and names are added by the rules.)
COMMON = """
man, men, woman, women, girl, girls, boy, boys, person, people, lady, guy, photo, photos,
picture, pictures, image, video, scene, body, bodies, bed, beach, shower, pose, posing, selfie,
camera, real, realistic, blood, dead, death, kill, killed, killing, murder, murdered, victim,
knife, gun, shot
"""


def phrases(block: str) -> frozenset[str]:
    """The comma-separated phrases of a block, each with its words separated by one space."""
    return frozenset(" ".join(p.split()) for p in block.split(",") if p.strip())
