"""Simulator puzzles: small made-up "neurons" with a known rule, a true explanation and three
false ones.

Each puzzle is a few sentences; every token's activation comes from the puzzle's rule (a
function of the tokens and the position), so the truth is exact. A simulator given the true
explanation should predict activations that correlate better with the truth than it does given
any of the false ones (which describe other, plausible rules that also touch these sentences).

Tokens are words with their leading space, numbers written with separators stay whole
(``" 2,500,000"``), and punctuation is split off (`tokenize`). They are not any model's
tokens; simulators only need the tokens they are shown.

Used by ``benchmarks/bench_puzzles.py``; plain data, no dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["PUZZLES", "Puzzle", "tokenize"]

_TOKEN = re.compile(r"\s?(?:\$|\w+(?:[.,']\w+)*|[^\w\s])")

Rule = Callable[[Sequence[str], int], float]


def tokenize(text: str) -> list[str]:
    """Words with their leading space; numbers with separators whole; punctuation alone."""
    tokens = _TOKEN.findall(text)
    assert "".join(tokens) == text, f"tokenize lost text in {text!r}"
    return tokens


@dataclass(frozen=True)
class Puzzle:
    """A rule-made neuron: its sentences, the rule, and explanations (the first is true)."""

    name: str
    sentences: tuple[str, ...]
    rule: Rule
    true: str
    false: tuple[str, str, str]

    @property
    def explanations(self) -> tuple[str, ...]:
        """The true explanation first, then the three false ones."""
        return (self.true, *self.false)

    def records(self) -> list[tuple[list[str], list[float]]]:
        """Each sentence's tokens and their activations under the rule."""
        out = []
        for sentence in self.sentences:
            tokens = tokenize(sentence)
            out.append((tokens, [float(self.rule(tokens, i)) for i in range(len(tokens))]))
        return out


def _word(token: str) -> str:
    return token.strip().lower()


def _in(words: set[str], value: float = 10.0) -> Rule:
    return lambda tokens, i: value if _word(tokens[i]) in words else 0.0


def _number(token: str) -> float | None:
    text = token.strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


def _above_a_million(tokens: Sequence[str], i: int) -> float:
    value = _number(tokens[i])
    if value is None:
        return 0.0
    return 10.0 if value > 1_000_000 else 0.0


def _after_of(tokens: Sequence[str], i: int) -> float:
    return 10.0 if i > 0 and _word(tokens[i - 1]) == "of" else 0.0


def _all_caps(tokens: Sequence[str], i: int) -> float:
    word = tokens[i].strip()
    return 10.0 if len(word) >= 2 and word.isalpha() and word.isupper() else 0.0


def _past_tense(tokens: Sequence[str], i: int) -> float:
    word = _word(tokens[i])
    return 10.0 if len(word) > 3 and word.endswith("ed") and word not in {"need", "seed"} else 0.0


def _sentence_start(tokens: Sequence[str], i: int) -> float:
    return 10.0 if i == 0 or tokens[i - 1].strip() in {".", "!", "?"} else 0.0


def _question_mark(tokens: Sequence[str], i: int) -> float:
    return 10.0 if tokens[i].strip() == "?" else 0.0


def _money(tokens: Sequence[str], i: int) -> float:
    if tokens[i].strip() == "$":
        return 6.0
    return 10.0 if i > 0 and tokens[i - 1].strip() == "$" else 0.0


COLOURS = {"red", "blue", "green", "yellow", "purple", "orange", "pink", "black", "white"}
ANIMALS = {"cat", "cats", "dog", "dogs", "horse", "horses", "fox", "owl", "owls", "rabbit"}
DAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
NEGATIONS = {"not", "never", "no", "nobody", "nothing", "n't", "neither", "nor"}
UNITS = {"km", "kilometres", "kg", "kilograms", "miles", "litres", "metres", "grams", "ml"}
BODY = {"hand", "hands", "knee", "head", "shoulder", "elbow", "foot", "feet", "eyes"}
FOOD = {"bread", "cheese", "apples", "soup", "rice", "pasta", "butter", "eggs", "honey"}
EMOTIONS = {"happy", "sad", "angry", "afraid", "joyful", "furious", "anxious", "delighted"}
KEYWORDS = {"def", "return", "import", "class", "while", "lambda", "yield"}
CITIES = {"paris", "london", "tokyo", "berlin", "madrid", "cairo", "lima", "oslo"}

PUZZLES: tuple[Puzzle, ...] = (
    Puzzle(
        "colours",
        (
            "She painted the old fence red and the door a bright blue.",
            "The green apples sat next to a yellow lemon on the table.",
            "His purple scarf clashed with the orange coat he wore.",
        ),
        _in(COLOURS),
        "colour words",
        ("fruit and food", "clothing items", "pieces of furniture"),
    ),
    Puzzle(
        "above-a-million",
        (
            "The city has 2,400,000 residents and 310 parks.",
            "They sold 15 paintings for a total of 4,750,000 dollars last year.",
            "Only 999,000 tickets were printed, not 1,200,000 as planned.",
        ),
        _above_a_million,
        "numbers larger than one million",
        ("any number", "words about money", "the word 'and'"),
    ),
    Puzzle(
        "after-of",
        (
            "The capital of France is a city of lights.",
            "Most of the students in the class of 2020 passed.",
            "A cup of tea and a slice of cake cost little.",
        ),
        _after_of,
        "the word right after 'of'",
        ("the word 'of' itself", "nouns at the end of a sentence", "food and drink"),
    ),
    Puzzle(
        "animals",
        (
            "The cat chased a fox across the field at dawn.",
            "Two horses and a rabbit shared the barn with an owl.",
            "Our dog barked at the cats next door all night.",
        ),
        _in(ANIMALS),
        "animals",
        ("places on a farm", "times of day", "verbs of motion"),
    ),
    Puzzle(
        "days",
        (
            "We meet every Monday and again on Thursday evening.",
            "The shop is closed on Sunday but opens early on Saturday.",
            "By Friday the report was finished, two days late.",
        ),
        _in(DAYS),
        "days of the week",
        ("times of day", "words about work", "capitalised names of places"),
    ),
    Puzzle(
        "negation",
        (
            "I did not see anything, and nobody told me.",
            "She never eats meat, and there is no milk left.",
            "Nothing happened, so we did not call anyone.",
        ),
        _in(NEGATIONS),
        "negation words such as not, never and no",
        ("pronouns", "verbs in the past tense", "food words"),
    ),
    Puzzle(
        "past-tense",
        (
            "He walked home and cooked dinner for his sister.",
            "They painted the wall and cleaned the floor yesterday.",
            "The dog jumped over the fence and barked loudly.",
        ),
        _past_tense,
        "verbs in the past tense ending in -ed",
        ("family members", "household chores as nouns", "adverbs"),
    ),
    Puzzle(
        "all-caps",
        (
            "The NASA launch was delayed, said the BBC report.",
            "Send the PDF to the HR team before noon.",
            "WARNING: do not open the box until the USB cable is ready.",
        ),
        _all_caps,
        "words written in all capital letters, such as acronyms",
        ("words about space and science", "office and work words", "warnings and dangers"),
    ),
    Puzzle(
        "sentence-start",
        (
            "Rain fell all day. Nobody went outside. Then the sun came out.",
            "Cats sleep a lot. Dogs do too. Birds rarely do.",
            "First, boil the water. Next, add the pasta.",
        ),
        _sentence_start,
        "the first word of each sentence",
        ("full stops", "animals", "weather words"),
    ),
    Puzzle(
        "questions",
        (
            "Where are you going? Can I come too?",
            "Is it raining? I think so, but who knows?",
            "Why did the bridge close? Nobody could say.",
        ),
        _question_mark,
        "question marks",
        ("question words such as where, why and who", "full stops", "pronouns"),
    ),
    Puzzle(
        "units",
        (
            "The trail is 12 km long and climbs 800 metres.",
            "Add 200 grams of flour and 50 ml of milk.",
            "The truck carried 3 kg of apples for 40 miles.",
        ),
        _in(UNITS),
        "units of measurement such as km, kg and miles",
        ("numbers", "food and cooking", "vehicles and travel"),
    ),
    Puzzle(
        "body-parts",
        (
            "She hurt her knee and her left hand while skiing.",
            "He shrugged one shoulder and rubbed his eyes.",
            "My feet ached after the walk, and so did my head.",
        ),
        _in(BODY),
        "parts of the body",
        ("sports and exercise", "pronouns such as her and his", "feelings of pain"),
    ),
    Puzzle(
        "food",
        (
            "For breakfast we had bread, butter and honey.",
            "The soup was thick, and the rice was cold.",
            "Buy eggs, cheese and apples on the way home.",
        ),
        _in(FOOD),
        "food",
        ("meals such as breakfast and dinner", "commas in lists", "temperatures"),
    ),
    Puzzle(
        "emotions",
        (
            "The children were happy, but their father looked sad.",
            "She was furious at first and then afraid of the dark.",
            "We felt anxious before the exam and delighted after it.",
        ),
        _in(EMOTIONS),
        "words for emotions and feelings",
        ("family members", "time words such as before and after", "school and exams"),
    ),
    Puzzle(
        "python-keywords",
        (
            "To load it, import json and then def parse(text): return json.loads(text)",
            "A class holds methods; a lambda is a small function.",
            "The loop runs while x is positive, and each step can yield a value.",
        ),
        _in(KEYWORDS),
        "Python keywords such as def, return, import and class",
        ("punctuation such as colons and brackets", "the word 'a'", "verbs"),
    ),
    Puzzle(
        "cities",
        (
            "She flew from Paris to Tokyo and then home to Oslo.",
            "The train from London reached Berlin before noon.",
            "Madrid is hotter than Lima in July.",
        ),
        _in(CITIES),
        "names of cities",
        ("months of the year", "words about travel", "comparisons such as hotter"),
    ),
    Puzzle(
        "money",
        (
            "The ticket cost $ 45 and the hotel $ 120 a night.",
            "He found $ 5 in his coat and spent it on coffee.",
            "Prices rose from $ 3 to $ 4 in a year.",
        ),
        _money,
        "amounts of money in dollars, strongest on the number after the dollar sign",
        ("any number", "travel words", "words about time"),
    ),
)
"""The puzzles; each has a true explanation and three false ones."""
