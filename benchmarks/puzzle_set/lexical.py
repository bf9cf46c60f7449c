"""Puzzles about words as words: single tokens, word families (inflections and affixes), one
sense of an ambiguous word, and casing."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._core import Puzzle, lexicon, puzzle, sense

__all__ = ["PUZZLES"]


def _ness(tokens: Sequence[str], i: int) -> float:
    text = tokens[i].strip().lower()
    return 10.0 if text.isalpha() and len(text) > 5 and text.endswith("ness") else 0.0


def _mid_sentence_capital(tokens: Sequence[str], i: int) -> float:
    text = tokens[i].strip()
    if i == 0 or not text[:1].isupper() or not text.isalpha() or text.isupper():
        return 0.0
    return 0.0 if tokens[i - 1].strip() in {".", "!", "?"} else 10.0


_CAMEL = re.compile(r"[a-z]+[A-Z][A-Za-z0-9]*")


def _camel_case(tokens: Sequence[str], i: int) -> float:
    return 10.0 if _CAMEL.fullmatch(tokens[i].strip()) else 0.0


_EMPHASIS = {"never", "stop", "now", "not", "very", "must", "really"}


def _emphasis_caps(tokens: Sequence[str], i: int) -> float:
    text = tokens[i].strip()
    return 10.0 if len(text) > 1 and text.isupper() and text.lower() in _EMPHASIS else 0.0


SINGLE_TOKEN = (
    puzzle(
        "just",
        "single_token",
        lexicon(["just"]),
        true="the word 'just'",
        decoy="the words 'train', 'minute' and 'arrived'",
        near_miss="adverbs that limit or soften, such as just, only and simply",
        other="words about time, such as minute, moment and night",
        sentences=(
            "The train had ⟦just⟧ left when we reached the platform.",
            "It is ⟦just⟧ a minute past noon, so we are only a little late.",
            "She simply smiled and said it was ⟦just⟧ fine.",
            "That was ⟦just⟧ the start of a very long night.",
            "We only wanted a quiet moment, nothing more.",
            "The judge gave a fair and ⟦just⟧ ruling.",
            "The bus arrived a minute early and simply waited.",
        ),
        decoy_words=("train", "minute", "arrived"),
        silent=("only", "simply"),
    ),
    puzzle(
        "if",
        "single_token",
        lexicon(["if"]),
        true="the word 'if'",
        decoy="the words 'rain', 'umbrella' and 'stay'",
        near_miss="words that introduce a condition or a time, such as if, unless and when",
        other="modal verbs such as will, can and should",
        sentences=(
            "⟦If⟧ it rains tomorrow, take the umbrella with you.",
            "We will stay home unless the rain stops.",
            "Call me when you land, and ⟦if⟧ the line is busy, send a text.",
            "I wonder ⟦if⟧ the shop is still open.",
            "You can borrow the car ⟦if⟧ you fill the tank.",
            "When the umbrella broke, we ran for the bus.",
            "She should stay until the storm passes.",
        ),
        decoy_words=("rain", "umbrella", "stay"),
        silent=("unless", "when"),
    ),
    puzzle(
        "over",
        "single_token",
        lexicon(["over"]),
        true="the word 'over'",
        decoy="the words 'bridge', 'fence' and 'jumped'",
        near_miss="prepositions of place such as over, under and above",
        other="verbs of motion such as jumped and flew",
        sentences=(
            "The horse jumped ⟦over⟧ the low fence.",
            "A bird flew ⟦over⟧ the bridge and landed above the door.",
            "The game is ⟦over⟧, so we can go home.",
            "They talked for ⟦over⟧ an hour about the bridge.",
            "The cat hid under the table near the fence.",
            "Pass me the blanket that hangs above the chair.",
            "She read the letter ⟦over⟧ and ⟦over⟧ again.",
        ),
        decoy_words=("bridge", "fence", "jumped"),
        silent=("under", "above"),
    ),
    puzzle(
        "still",
        "single_token",
        lexicon(["still"]),
        true="the word 'still'",
        decoy="the words 'waiting', 'lake' and 'quiet'",
        near_miss="time words for something continuing or done, such as still, yet and already",
        other="words describing water and lakes",
        sentences=(
            "We were ⟦still⟧ waiting at the gate at midnight.",
            "The lake was ⟦still⟧ and quiet at dawn.",
            "Has the parcel arrived yet? It is ⟦still⟧ not here.",
            "He already knew the answer but ⟦still⟧ asked.",
            "She sat quiet by the lake for hours.",
            "The kettle has already boiled, yet nobody is waiting.",
            "Keep ⟦still⟧ while I take the photo.",
        ),
        decoy_words=("waiting", "lake", "quiet"),
        silent=("yet", "already"),
    ),
)

WORD_FAMILY = (
    puzzle(
        "forms-of-run",
        "word_family",
        lexicon(["run", "runs", "ran", "running"]),
        true="forms of the verb 'run' (run, runs, ran, running)",
        decoy="the words 'race', 'park' and 'morning'",
        near_miss="the word 'run' itself",
        other="words about sport and exercise",
        sentences=(
            "She ⟦runs⟧ in the park every morning.",
            "Yesterday we ⟦ran⟧ the whole race without a break.",
            "The engine kept ⟦running⟧ after he left the car.",
            "I want to ⟦run⟧ before the rain starts.",
            "They walked slowly around the park after the race.",
            "The morning was cold, so the children stayed inside.",
            "If the printer ⟦runs⟧ out of paper, it stops.",
        ),
        decoy_words=("race", "park", "morning"),
        firing=("ran", "running", "runs"),
    ),
    puzzle(
        "ness-nouns",
        "word_family",
        _ness,
        true="nouns ending in '-ness', such as kindness and darkness",
        decoy="the adjectives 'kind', 'dark' and 'happy'",
        near_miss="abstract nouns such as kindness, freedom and courage",
        other="words about feelings",
        sentences=(
            "Her ⟦kindness⟧ surprised everyone in the village.",
            "The ⟦darkness⟧ of the room made it hard to read.",
            "It was dark and cold, but the children were happy.",
            "Courage and freedom mattered more to him than ⟦happiness⟧.",
            "A sudden ⟦illness⟧ kept him at home for a week.",
            "She was kind to the new student on his first day.",
            "They admired the ⟦fitness⟧ of the dancers and the ⟦sadness⟧ in the song.",
        ),
        decoy_words=("kind", "dark", "happy"),
        silent=("courage", "freedom"),
    ),
    puzzle(
        "un-adjectives",
        "word_family",
        lexicon(
            ["unhappy", "unclear", "unusual", "unkind", "unable", "unsafe", "unknown", "unfair"]
        ),
        true="adjectives with the negative prefix 'un-', such as unhappy, unclear and unusual",
        decoy="the words 'happy', 'clear' and 'usual'",
        near_miss="words beginning with 'un', such as under, until and unclear",
        other="family members such as uncle and sister",
        sentences=(
            "The ending of the film was ⟦unclear⟧ to most of us.",
            "My uncle stayed with us until Sunday.",
            "It is ⟦unusual⟧ to see snow here in spring.",
            "The child looked ⟦unhappy⟧ under the big umbrella.",
            "The answer was clear and the path was safe.",
            "The bridge is ⟦unsafe⟧, and the cause is still ⟦unknown⟧.",
            "As usual, the students were happy to help.",
            "He was ⟦unable⟧ to finish before the deadline, which felt ⟦unfair⟧.",
        ),
        decoy_words=("happy", "clear", "usual"),
        silent=("under", "until", "uncle"),
    ),
    puzzle(
        "manner-adverbs",
        "word_family",
        lexicon(
            ["quickly", "slowly", "quietly", "carefully", "loudly", "gently", "softly", "badly"]
        ),
        true="adverbs of manner ending in '-ly', such as quickly, slowly and carefully",
        decoy="the verbs 'walked', 'spoke' and 'closed'",
        near_miss="any word ending in '-ly', such as family, friendly and slowly",
        other="verbs in the past tense",
        sentences=(
            "She walked ⟦slowly⟧ across the icy yard.",
            "The friendly dog wagged its tail at the family.",
            "He spoke ⟦quietly⟧ so that the baby would not wake.",
            "Please close the door ⟦gently⟧ and ⟦carefully⟧.",
            "Our family always eats early on Fridays.",
            "The crowd cheered ⟦loudly⟧ when the team scored.",
            "They closed the shop and went home.",
        ),
        decoy_words=("walked", "spoke", "closed"),
        silent=("family", "friendly", "early"),
    ),
    puzzle(
        "forms-of-be",
        "word_family",
        lexicon(["be", "is", "am", "are", "was", "were", "been", "being"]),
        true="forms of the verb 'be' (is, am, are, was, were, been)",
        decoy="the words 'house', 'garden' and 'old'",
        near_miss="the word 'is'",
        other="auxiliary verbs such as have, has and will",
        sentences=(
            "The house ⟦is⟧ old, but the garden ⟦is⟧ new.",
            "We ⟦were⟧ tired after the long trip.",
            "She has ⟦been⟧ to the garden twice today.",
            "I ⟦am⟧ sure the keys ⟦are⟧ in the car.",
            "Tom painted the old fence last summer.",
            "They have lived in that house for years.",
            "It ⟦was⟧ raining, and the roads ⟦were⟧ wet.",
        ),
        decoy_words=("house", "garden", "old"),
        firing=("was", "were", "are"),
    ),
)

WORD_SENSE = (
    puzzle(
        "bank-river",
        "word_sense",
        sense(
            ["bank", "banks"],
            ["river", "stream", "canal", "muddy", "grassy", "fished", "ducks", "reeds", "flood"],
        ),
        true="the word 'bank' meaning the side of a river",
        decoy="the words 'money', 'loan' and 'account'",
        near_miss="the word 'bank' in any sense",
        other="words about water and rivers",
        sentences=(
            "We sat on the grassy ⟦bank⟧ and watched the boats.",
            "The bank lent them money for a new roof.",
            "Ducks nested along the muddy ⟦bank⟧ of the stream.",
            "She opened an account at the bank near the station.",
            "After the flood, the river burst its ⟦banks⟧.",
            "He fished from the ⟦bank⟧ all afternoon.",
            "The loan from the bank was paid back in June.",
            "They walked by the river and talked about money.",
        ),
        decoy_words=("money", "loan", "account"),
        silent=("bank",),
    ),
    puzzle(
        "bat-animal",
        "word_sense",
        sense(["bat", "bats"], ["cave", "flew", "wings", "insects", "night", "dusk"]),
        true="the word 'bat' meaning the flying animal",
        decoy="the words 'ball', 'cricket' and 'swung'",
        near_miss="the word 'bat' in any sense",
        other="words about sports and games",
        sentences=(
            "A ⟦bat⟧ flew out of the cave at dusk.",
            "He swung the bat and hit the ball hard.",
            "Fruit ⟦bats⟧ hang upside down and spread their wings.",
            "The old cricket bat leans against the wall.",
            "At night the ⟦bats⟧ hunt insects over the pond.",
            "We found a sleeping ⟦bat⟧ in the cave.",
            "The ball rolled under the fence during the game.",
            "She plays cricket every Saturday.",
        ),
        decoy_words=("ball", "cricket", "swung"),
        silent=("bat",),
    ),
    puzzle(
        "spring-season",
        "word_sense",
        sense(["spring"], ["summer", "winter", "autumn", "blossom", "flowers", "april", "season"]),
        true="the word 'spring' meaning the season",
        decoy="the words 'mattress', 'coil' and 'water'",
        near_miss="seasons of the year, such as spring, summer and winter",
        other="words about flowers and gardens",
        sentences=(
            "The cherry trees blossom every ⟦spring⟧.",
            "A broken spring in the mattress kept me awake.",
            "We plant beans in ⟦spring⟧ and pick them in summer.",
            "The hot spring smelled of sulphur and warm water.",
            "Winter was long, so the ⟦spring⟧ flowers came late.",
            "Each coil spring in the watch is smaller than a grain of rice.",
            "The summer heat dried the water in the well.",
            "By April the ⟦spring⟧ rains had filled the pond.",
        ),
        decoy_words=("mattress", "coil", "water"),
        silent=("summer", "winter"),
    ),
    puzzle(
        "match-fire",
        "word_sense",
        sense(["match", "matches"], ["struck", "lit", "candle", "fire", "box", "flame"]),
        true="the word 'match' meaning a small stick for lighting a fire",
        decoy="the words 'football', 'team' and 'colour'",
        near_miss="the word 'match' in any sense",
        other="words about games and competitions",
        sentences=(
            "She struck a ⟦match⟧ and lit the candle.",
            "The football match ended in a draw.",
            "Keep the ⟦matches⟧ away from the fire.",
            "His tie matches the colour of his shirt.",
            "The box of ⟦matches⟧ was damp, so nothing would light.",
            "Our team won the match on Sunday.",
            "The candle burned down before midnight.",
            "We watched the game and cheered for the team.",
        ),
        decoy_words=("football", "team", "colour"),
        silent=("match", "matches"),
    ),
)

CASING = (
    puzzle(
        "mid-sentence-capitals",
        "casing",
        _mid_sentence_capital,
        true="capitalised words in the middle of a sentence, such as names of people and places",
        decoy="the words 'flew', 'exam' and 'puppy'",
        near_miss="every capitalised word, including the first word of a sentence",
        other="verbs in the past tense",
        sentences=(
            "Yesterday ⟦Maria⟧ flew from ⟦Lisbon⟧ to ⟦Warsaw⟧.",
            "The river flows past the old mill.",
            "We asked ⟦Professor⟧ ⟦Okafor⟧ about the exam.",
            "She keeps her bike in the shed behind the house.",
            "The meeting moved to ⟦Thursday⟧ because ⟦Ahmed⟧ was ill.",
            "Our neighbours adopted a puppy called ⟦Biscuit⟧.",
            "Rain fell all night. Nobody slept well.",
        ),
        decoy_words=("flew", "exam", "puppy"),
        silent=("yesterday", "nobody", "rain"),
    ),
    puzzle(
        "camel-case",
        "casing",
        _camel_case,
        true="camelCase identifiers in code, such as userName or isReady",
        decoy="the words 'return', 'print' and 'if'",
        near_miss="any variable or function name in code",
        other="numbers and arithmetic operators",
        sentences=(
            "⟦userName⟧ = ⟦loadProfile⟧(user_id)",
            "total_price = count * unit_price",
            "if ⟦isReady⟧: print(⟦statusText⟧)",
            "for item in items: total += item",
            "return ⟦maxValue⟧ - ⟦minValue⟧ + 1",
            "The function returns the total as a float.",
            "const ⟦pageCount⟧ = 12;",
        ),
        decoy_words=("return", "print", "if"),
        silent=("count", "total_price", "item"),
    ),
    puzzle(
        "emphasis-caps",
        "casing",
        _emphasis_caps,
        true="ordinary words written in capitals for emphasis, such as NEVER or STOP "
        "(not acronyms)",
        decoy="the words 'door', 'cable' and 'report'",
        near_miss="words in all capital letters, acronyms such as NASA included",
        other="warnings and instructions",
        sentences=(
            "Do ⟦NOT⟧ open the door until the alarm stops.",
            "The NASA report was shared by the BBC.",
            "You ⟦MUST⟧ unplug the USB cable first.",
            "⟦STOP⟧ talking and listen to me ⟦NOW⟧.",
            "The door was locked, so we waited outside.",
            "I will ⟦NEVER⟧ lend him my car again.",
            "The FBI and the UN sent a ⟦VERY⟧ short report.",
        ),
        decoy_words=("door", "cable", "report"),
        silent=("nasa", "bbc", "usb", "fbi"),
    ),
)

PUZZLES: tuple[Puzzle, ...] = (*SINGLE_TOKEN, *WORD_FAMILY, *WORD_SENSE, *CASING)
"""This module's puzzles, in order."""
