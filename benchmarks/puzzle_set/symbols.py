"""Puzzles about symbols: code, numbers, dates and times, and units."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._core import Puzzle, inside, lexicon, puzzle, word

__all__ = ["PUZZLES"]

_NAME = re.compile(r"[A-Za-z_][\w.]*")
_ORDINAL = re.compile(r"\d+(?:st|nd|rd|th)")
_DECIMAL = re.compile(r"\d+\.\d+")
_DECADE = re.compile(r"\d{2,4}s")


def _digits(token: str) -> bool:
    return token.strip().isdigit()


def _call_name(tokens: Sequence[str], i: int) -> float:
    following = tokens[i + 1] if i + 1 < len(tokens) else ""
    return 10.0 if following == "(" and _NAME.fullmatch(tokens[i].strip()) else 0.0


def _comment(tokens: Sequence[str], i: int) -> float:
    marks = [j for j, t in enumerate(tokens) if t.strip() == "#"]
    if not marks or i < marks[0]:
        return 0.0
    return 4.0 if i == marks[0] else 10.0


def _html_tag(tokens: Sequence[str], i: int) -> float:
    if i == 0 or not tokens[i][:1].isalnum():
        return 0.0
    before = tokens[i - 1].strip()
    closing = before == "/" and i > 1 and tokens[i - 2].strip() == "<"
    return 10.0 if before == "<" or closing else 0.0


def _year(tokens: Sequence[str], i: int) -> float:
    text = tokens[i].strip()
    return 10.0 if len(text) == 4 and text.isdigit() and 1000 <= int(text) <= 2099 else 0.0


def _ordinal(tokens: Sequence[str], i: int) -> float:
    words = {"first", "second", "third", "fourth", "fifth", "sixth", "seventh", "tenth"}
    text = word(tokens[i])
    return 10.0 if text in words or _ORDINAL.fullmatch(text) else 0.0


def _percentage(tokens: Sequence[str], i: int) -> float:
    text = word(tokens[i])
    if text in {"%", "percent"}:
        return 6.0
    following = word(tokens[i + 1]) if i + 1 < len(tokens) else ""
    return 10.0 if _digits(tokens[i]) and following in {"%", "percent"} else 0.0


def _decimal(tokens: Sequence[str], i: int) -> float:
    return 10.0 if _DECIMAL.fullmatch(tokens[i].strip()) else 0.0


def _clock(tokens: Sequence[str], i: int) -> float:
    def at(j: int) -> str:
        return tokens[j] if 0 <= j < len(tokens) else ""

    text = tokens[i].strip()
    if text == ":" and _digits(at(i - 1)) and at(i + 1).isdigit():
        return 5.0
    if _digits(tokens[i]):
        hour = at(i + 1) == ":" and at(i + 2).isdigit()
        minutes = tokens[i].isdigit() and at(i - 1) == ":" and _digits(at(i - 2))
        meridian = word(at(i + 1)) in {"am", "pm"}
        return 10.0 if hour or minutes or meridian else 0.0
    if word(text) in {"am", "pm"} and i > 0 and _digits(tokens[i - 1]):
        return 5.0
    return 0.0


def _decade(tokens: Sequence[str], i: int) -> float:
    words = {"fifties", "sixties", "seventies", "eighties", "nineties"}
    text = word(tokens[i])
    return 10.0 if text in words or _DECADE.fullmatch(text) else 0.0


def _currency(tokens: Sequence[str], i: int) -> float:
    signs = {"$", "€", "£"}
    if tokens[i].strip() in signs:
        return 6.0
    after_sign = i > 0 and tokens[i - 1].strip() in signs and tokens[i][:1].isdigit()
    return 10.0 if after_sign else 0.0


def _temperature(tokens: Sequence[str], i: int) -> float:
    text = word(tokens[i])
    if text in {"°", "degrees", "celsius", "fahrenheit"}:
        return 10.0
    if tokens[i] in {"C", "F"} and i > 0 and tokens[i - 1] == "°":
        return 10.0
    following = word(tokens[i + 1]) if i + 1 < len(tokens) else ""
    return 5.0 if _digits(tokens[i]) and following in {"°", "degrees"} else 0.0


CODE = (
    puzzle(
        "string-literal",
        "code",
        inside('"', '"', value=10.0, edge=4.0),
        true="the contents of string literals in code, weaker on the quote marks around them",
        decoy="the words 'print', 'open' and 'log'",
        near_miss="every argument of a function call, names and numbers included",
        other="numbers in code",
        sentences=(
            'print(⟦"hello world"⟧)',
            "x = max(a, b) + 10",
            'open(⟦"data.csv"⟧, ⟦"r"⟧)',
            'log(⟦"disk almost full"⟧, level)',
            "total = sum(values) / len(values)",
            'name = ⟦"Ada"⟧ if ok else ⟦"Bob"⟧',
            "for i in range(3): print(i)",
        ),
        decoy_words=("print", "open", "log"),
        silent=("values", "level"),
    ),
    puzzle(
        "call-names",
        "code",
        _call_name,
        true="the name of a function being called, right before its opening bracket",
        decoy="the words 'return', 'if' and 'for'",
        near_miss="every name in code, variables such as result and items included",
        other="numbers and operators",
        sentences=(
            "result = ⟦compute⟧(data)",
            "if ready: ⟦start⟧()",
            "items = [1, 2, 3]",
            "return ⟦len⟧(items) + ⟦sum⟧(data)",
            "for row in rows: ⟦print⟧(row)",
            "x = y * 2 + z",
            "total = ⟦round⟧(⟦float⟧(value), 2)",
        ),
        decoy_words=("return", "if", "for"),
        silent=("result", "data", "items"),
    ),
    puzzle(
        "comments",
        "code",
        _comment,
        true="the text of a code comment after '#', weaker on the '#' itself",
        decoy="the words 'return', 'def' and 'import'",
        near_miss="the '#' sign that starts a comment",
        other="Python keywords",
        sentences=(
            "x = 1 ⟦# start at one⟧",
            "return total / count + 1",
            "import os ⟦# needed for paths⟧",
            "⟦# TODO: fix this slow loop⟧",
            "def area(w, h): return w * h",
            "y = x ** 2 ⟦# square it⟧",
            "print(name) ⟦# debug only, remove later⟧",
        ),
        decoy_words=("return", "def", "import"),
        firing=("fix", "paths", "start"),
    ),
    puzzle(
        "bool-none",
        "code",
        lexicon(["True", "False", "None"], case=True),
        true="the Python constants True, False and None",
        decoy="the words 'return', 'if' and 'else'",
        near_miss="words meaning yes, no, true or false, in prose or in code",
        other="comparison operators",
        sentences=(
            "return ⟦True⟧ if x > 0 else ⟦False⟧",
            "The rumour turned out to be true.",
            "if result is ⟦None⟧: raise ValueError(msg)",
            "done = ⟦False⟧ # not yet",
            "Is it true or false that cats see colour?",
            "cache = {} if cache is ⟦None⟧ else cache",
            "She said no to the offer.",
        ),
        decoy_words=("return", "if", "else"),
        silent=("true", "false", "no"),
    ),
    puzzle(
        "html-tags",
        "code",
        _html_tag,
        true="HTML tag names, such as div, p and a, right after '<' or '</'",
        decoy="the words 'hello', 'home' and 'click'",
        near_miss="the angle brackets < and >",
        other="ordinary English words",
        sentences=(
            "<⟦div⟧>Hello</⟦div⟧>",
            '<⟦a⟧ href="/home">Home</⟦a⟧>',
            "Click the button to go home.",
            "<⟦p⟧>Read more</⟦p⟧>",
            "<⟦ul⟧><⟦li⟧>Tea</⟦li⟧></⟦ul⟧>",
            "The page loads in under a second.",
            "x < 3 and y > 5",
            "<⟦h1⟧>Welcome</⟦h1⟧>",
        ),
        decoy_words=("hello", "home", "click"),
        silent=("<", ">"),
    ),
)

NUMBERS = (
    puzzle(
        "years",
        "numbers",
        _year,
        true="four-digit years such as 1987 or 2015",
        decoy="the words 'born', 'built' and 'moved'",
        near_miss="any number",
        other="words about moving house",
        sentences=(
            "She was born in ⟦1987⟧ in a small town.",
            "The tower is 300 metres tall.",
            "They moved to Spain in ⟦2015⟧ and back in ⟦2019⟧.",
            "The castle was built around ⟦1250⟧.",
            "We bought 12 eggs and 3 loaves.",
            "In ⟦1969⟧, 2 astronauts walked on the moon.",
            "Our flat has 4 rooms and 1 balcony.",
        ),
        decoy_words=("born", "built", "moved"),
        silent=("300", "12", "2"),
    ),
    puzzle(
        "ordinals",
        "numbers",
        _ordinal,
        true="ordinal numbers such as first, third, 4th and 21st",
        decoy="the words 'floor', 'birthday' and 'century'",
        near_miss="any number, in digits or in words",
        other="words about buildings",
        sentences=(
            "She finished ⟦first⟧ and her brother ⟦third⟧.",
            "We live on the ⟦4th⟧ floor.",
            "Two cats sat on the wall.",
            "The ⟦21st⟧ century began in 2001.",
            "He bought five apples and ten pears.",
            "This is my ⟦second⟧ visit to the city.",
            "Her ⟦fifth⟧ birthday party was in the garden.",
            "The race had 5 runners and 2 judges.",
        ),
        decoy_words=("floor", "birthday", "century"),
        silent=("two", "five", "2001", "5"),
    ),
    puzzle(
        "number-words",
        "numbers",
        lexicon(
            ["two", "three", "five", "seven", "twelve", "twenty", "hundred", "thousand", "million"]
        ),
        true="numbers written out as words, such as three, twenty and hundred",
        decoy="the words 'books', 'days' and 'people'",
        near_miss="every number, in digits or in words",
        other="plural nouns",
        sentences=(
            "We waited ⟦three⟧ days for the parcel.",
            "About 200 people came to the fair.",
            "She owns ⟦twenty⟧ books on birds.",
            "The bridge took ⟦five⟧ years and cost a ⟦million⟧ pounds.",
            "There are 7 days in a week.",
            "⟦Two hundred⟧ people signed the letter.",
            "The bus holds 40 people and their bags.",
        ),
        decoy_words=("books", "days", "people"),
        silent=("200", "7", "40"),
    ),
    puzzle(
        "percentages",
        "numbers",
        _percentage,
        true="percentages: the number before a % sign or 'percent' (strongest) and the sign",
        decoy="the words 'prices', 'rose' and 'year'",
        near_miss="any number",
        other="words about money",
        sentences=(
            "Prices rose by ⟦5%⟧ last year.",
            "The shop sold 40 bikes in June.",
            "Only ⟦12%⟧ of voters agreed, down from ⟦20%⟧.",
            "About ⟦30 percent⟧ of the town lost power.",
            "The rent rose again this year.",
            "Battery at ⟦85%⟧, so 3 hours left.",
            "We met 8 friends at the station.",
        ),
        decoy_words=("prices", "rose", "year"),
        silent=("40", "3", "8"),
    ),
    puzzle(
        "decimals",
        "numbers",
        _decimal,
        true="numbers with a decimal point, such as 3.14 or 0.5",
        decoy="the words 'metres', 'price' and 'weighs'",
        near_miss="any number",
        other="units of measurement",
        sentences=(
            "The baby weighs ⟦3.2⟧ kilograms.",
            "We walked 12 miles today.",
            "Pi is roughly ⟦3.14⟧, not 3.",
            "The price fell from ⟦4.99⟧ to ⟦3.50⟧.",
            "She jumped ⟦1.85⟧ metres in the final.",
            "Our team scored 100 points.",
            "There were 25 chairs and 5 tables.",
        ),
        decoy_words=("metres", "price", "weighs"),
        silent=("12", "3", "100"),
    ),
)

DATES_TIMES = (
    puzzle(
        "months",
        "dates_times",
        lexicon(["january", "march", "april", "july", "august", "september"]),
        true="names of months, such as January, July and September",
        decoy="the words 'holiday', 'school' and 'snow'",
        near_miss="dates and days of any kind, weekdays such as Monday included",
        other="seasons and weather",
        sentences=(
            "School starts again in ⟦September⟧.",
            "We meet every Monday at noon.",
            "It snowed in ⟦March⟧ and again in ⟦April⟧.",
            "Our holiday runs from ⟦July⟧ to early ⟦August⟧.",
            "The snow melted by Friday.",
            "Her birthday is on 3 ⟦January⟧.",
            "Friday was a school holiday.",
        ),
        decoy_words=("holiday", "school", "snow"),
        silent=("monday", "friday"),
    ),
    puzzle(
        "clock-times",
        "dates_times",
        _clock,
        true="clock times such as 7:30 or 9 pm: strongest on the hours and minutes, weaker on "
        "the colon and on am/pm",
        decoy="the words 'train', 'meeting' and 'leaves'",
        near_miss="any number",
        other="words about travel",
        sentences=(
            "The train leaves at ⟦7:30⟧ tomorrow.",
            "We bought 3 tickets for 40 pounds.",
            "The meeting starts at ⟦9 pm⟧ sharp.",
            "Lunch is served from ⟦12:15⟧ to ⟦13:00⟧.",
            "He ran 10 laps around the track.",
            "Set the alarm for ⟦6:45 am⟧.",
            "The shop has 2 doors and 5 windows.",
        ),
        decoy_words=("train", "meeting", "leaves"),
        silent=("3", "40", "10"),
    ),
    puzzle(
        "relative-days",
        "dates_times",
        lexicon(["today", "tomorrow", "yesterday", "tonight"]),
        true="the words today, tomorrow, yesterday and tonight",
        decoy="the words 'rain', 'party' and 'call'",
        near_miss="words about time of any kind, such as week, hour and morning",
        other="verbs of planning",
        sentences=(
            "It will rain ⟦tomorrow⟧, so bring a coat.",
            "The party lasted an hour.",
            "⟦Yesterday⟧ we cleaned the whole house.",
            "Call me ⟦tonight⟧ after dinner.",
            "Next week the shop is closed.",
            "⟦Today⟧ is colder than ⟦yesterday⟧.",
            "We left early in the morning.",
        ),
        decoy_words=("rain", "party", "call"),
        silent=("hour", "week", "morning"),
    ),
    puzzle(
        "decades",
        "dates_times",
        _decade,
        true="decades, such as the 1980s or the sixties",
        decoy="the words 'music', 'fashion' and 'cars'",
        near_miss="years and decades, single years such as 1985 included",
        other="words about music and fashion",
        sentences=(
            "Music from the ⟦1980s⟧ is popular again.",
            "She was born in 1985 in Leeds.",
            "Cars were cheaper in the ⟦sixties⟧.",
            "The ⟦1920s⟧ brought new fashion and jazz.",
            "The film won an award in 2003.",
            "By the ⟦nineties⟧ the factory had closed.",
            "Fashion changes every few years.",
        ),
        decoy_words=("music", "fashion", "cars"),
        silent=("1985", "2003"),
    ),
)

UNITS = (
    puzzle(
        "length-units",
        "units",
        lexicon(["km", "metres", "inches", "feet", "miles", "cm", "mm"]),
        true="units of length, such as metres, km, miles and inches",
        decoy="the words 'road', 'long' and 'bag'",
        near_miss="units of measurement of any kind, such as kg, litres and grams",
        other="numbers",
        sentences=(
            "The road is 40 ⟦km⟧ long.",
            "The bag weighs 3 kg.",
            "She swam 800 ⟦metres⟧ before breakfast.",
            "Add 2 litres of water to the pot.",
            "The shelf is 30 ⟦inches⟧ wide and 6 ⟦feet⟧ tall.",
            "We drove 200 ⟦miles⟧ with a 5 kg bag of apples.",
            "The recipe needs 500 grams of flour.",
        ),
        decoy_words=("road", "long", "bag"),
        silent=("kg", "litres", "grams"),
    ),
    puzzle(
        "currency",
        "units",
        _currency,
        true="money amounts written with a currency sign, such as $45 or €120, strongest on "
        "the number",
        decoy="the words 'ticket', 'coffee' and 'cost'",
        near_miss="any number",
        other="shopping words",
        sentences=(
            "The ticket cost ⟦$45⟧ in the end.",
            "I drank 3 cups of coffee.",
            "A room here is ⟦€120⟧ a night.",
            "She paid ⟦£5⟧ for 12 eggs.",
            "The coffee machine broke twice.",
            "Lunch for 4 came to ⟦$62.50⟧.",
            "The cost doubled in 2 years.",
        ),
        decoy_words=("ticket", "coffee", "cost"),
        silent=("3", "12", "4"),
    ),
    puzzle(
        "temperature",
        "units",
        _temperature,
        true="temperatures: the degree sign and words such as degrees and Celsius, weaker on the "
        "number",
        decoy="the words 'hot', 'cold' and 'oven'",
        near_miss="any number",
        other="weather words",
        sentences=(
            "The oven should be at ⟦200°C⟧.",
            "It was hot and dry for a week.",
            "Water boils at ⟦100 degrees Celsius⟧.",
            "Bring 2 jumpers; it gets cold at night.",
            "The forecast says ⟦75°F⟧ and sunny.",
            "Set the heater to ⟦21 degrees⟧ tonight.",
            "The oven door is cold to touch.",
        ),
        decoy_words=("hot", "cold", "oven"),
        silent=("2",),
    ),
    puzzle(
        "data-size",
        "units",
        lexicon(["KB", "MB", "GB", "TB", "bytes"], case=True),
        true="units of digital storage, such as KB, MB, GB and bytes",
        decoy="the words 'file', 'phone' and 'disk'",
        near_miss="abbreviations in capital letters, such as USB, PC and PDF",
        other="computer words",
        sentences=(
            "The file is 4 ⟦MB⟧ after compression.",
            "Plug the USB stick into the PC.",
            "My phone has 128 ⟦GB⟧ of space.",
            "Each record takes 64 ⟦bytes⟧ on disk.",
            "Save the report as a PDF file.",
            "The backup grew from 2 ⟦TB⟧ to 3 ⟦TB⟧.",
            "The disk spins quietly under the desk.",
        ),
        decoy_words=("file", "phone", "disk"),
        silent=("usb", "pc", "pdf"),
    ),
)

PUZZLES: tuple[Puzzle, ...] = (*CODE, *NUMBERS, *DATES_TIMES, *UNITS)
"""This module's puzzles, in order."""
