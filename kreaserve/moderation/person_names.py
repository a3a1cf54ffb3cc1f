"""The words of real-person detection (data only; `rules.py` uses them): given names for the
"Firstname Lastname" pattern, what may follow one without making it a person, and fictional
characters. The words that make a name an attribution are a lexicon group (`ATTRIBUTION`)."""

from __future__ import annotations

#: Common given names for the "Firstname Lastname" pattern (capitalised text only).
FIRST_NAMES = """
aaron adam adele adrian aidan alan albert alex alexander alexandra alexis alice alicia alison
amanda amber amelia amy ana andrea andrew andy angela angelina anna anne annie anthony ariana
ashley austin ava barbara ben benjamin beth betty bill billie billy blake bob bonnie brad
bradley brandon brenda brian brittany brooke bruce bryan caleb cameron camila carl carla carlos
carol caroline carrie casey catherine charles charlie charlotte chelsea chloe chris christian
christina christine christopher claire colin connor courtney craig cristiano daisy dakota dan
daniel danielle dave david demi dennis diana diane dolly donald donna doug dua dwayne dylan
ed eddie edward elizabeth ella ellen elon emily emma eric erin ethan eva evan felicity florence
frank gabriel gal gary george georgia gigi grace greg gwen gwyneth hailey haley hannah harry
hayden heather heidi helen henry hillary hugh ian isaac isabella jack jackie jacob jake james
jamie jane janet jared jason jay jean jeff jennifer jenna jeremy jerry jessica jill jim jimmy
joan joe joel john johnny jon jonathan jordan jose joseph josh joshua julia julian julie justin
kamala karen kate katherine kathy katie katy kayla keanu keira kelly ken kendall kevin kim
kristen kylie lady laura lauren leah lebron leonardo liam lily linda lindsay lisa liz logan
lucas lucy luke madison maria mariah marie marilyn mark martha martin mary matt matthew megan
meghan melania melissa mia michael michelle mike miley miranda molly morgan natalie nathan
nicholas nick nicki nicole noah nora oliver olivia oprah owen pamela paris patricia patrick paul
penelope peter rachel rebecca richard rihanna rob robert robin ron rose ruby russell ryan sabrina
sally sam samantha samuel sandra sara sarah scarlett scott sean selena serena shakira sharon
shawn sophia sophie stephanie steve steven sue susan sydney taylor ted terry thomas tiffany tim
timothy tina tom tony tyler vanessa victoria vin vladimir will william winona zac zach zendaya
zoe zoey
"""

#: Well-known fictional characters: a name, but not of a real person.
FICTIONAL = """
harry potter, jessica rabbit, peter pan, peter parker, mary jane, bruce wayne, clark kent,
tony stark, diana prince, james bond, jack sparrow, luke skywalker, john wick, sherlock holmes,
john snow, jon snow, indiana jones, alice liddell, daisy duck, minnie mouse, wonder woman,
lara croft, harley quinn, poison ivy, jessica jones, barbara gordon, mary poppins, ellen ripley
"""

#: Capitalised words that follow a first name without making it a person ("Rose Garden").
NOT_SURNAMES = """
street avenue road lane park lake river garden gardens bay city town hill hills valley island
beach mountain forest hotel church school college university hall house tower bridge station
day night style france italy spain germany japan china india mexico brazil london texas
california york beach tokyo rome berlin falls opera square center centre museum theatre
theater airport palace castle cathedral harbour harbor gate canyon coast springs heights
plaza mall market stadium arena temple abbey avenue boulevard county state province
"""
