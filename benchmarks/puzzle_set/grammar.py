"""Puzzles about structure: syntax, negation, punctuation, quotations and position in the
sentence."""

from __future__ import annotations

from collections.abc import Sequence

from ._core import Puzzle, inside, lexicon, puzzle, word

__all__ = ["PUZZLES"]

_ENDS = {".", "!", "?"}


def _after_to(tokens: Sequence[str], i: int) -> float:
    verbs = {"go", "finish", "see", "learn", "win", "eat"}
    return 10.0 if i > 0 and word(tokens[i - 1]) == "to" and word(tokens[i]) in verbs else 0.0


def _passive(tokens: Sequence[str], i: int) -> float:
    be = {"is", "are", "was", "were", "been", "be"}
    participles = {"built", "stolen", "written", "seen", "sold"}
    if i == 0 or word(tokens[i - 1]) not in be:
        return 0.0
    return 10.0 if word(tokens[i]) in participles else 0.0


def _relative(tokens: Sequence[str], i: int) -> float:
    if word(tokens[i]) not in {"who", "which", "whose", "whom"}:
        return 0.0
    return 10.0 if i > 0 and tokens[i - 1].strip() not in _ENDS else 0.0


def _possessive(tokens: Sequence[str], i: int) -> float:
    contractions = {"it's", "that's", "he's", "she's", "there's", "what's", "let's", "here's"}
    text = word(tokens[i])
    return 10.0 if text.endswith("'s") and text not in contractions else 0.0


def _nt(tokens: Sequence[str], i: int) -> float:
    return 10.0 if word(tokens[i]).endswith("n't") else 0.0


def _negated(tokens: Sequence[str], i: int) -> float:
    if i == 0 or not tokens[i].strip().isalpha():
        return 0.0
    before = word(tokens[i - 1])
    return 10.0 if before in {"not", "never"} or before.endswith("n't") else 0.0


def _exclamation(tokens: Sequence[str], i: int) -> float:
    return 10.0 if tokens[i].strip() == "!" else 0.0


def _hyphen(tokens: Sequence[str], i: int) -> float:
    if tokens[i] != "-" or i == 0 or i + 1 >= len(tokens):
        return 0.0
    return 10.0 if tokens[i - 1][-1:].isalnum() and tokens[i + 1][:1].isalnum() else 0.0


def _ellipsis(tokens: Sequence[str], i: int) -> float:
    if tokens[i] != ".":
        return 0.0
    start = i
    while start > 0 and tokens[start - 1] == ".":
        start -= 1
    end = i
    while end + 1 < len(tokens) and tokens[end + 1] == ".":
        end += 1
    return 10.0 if end - start >= 2 else 0.0


def _list_colon(tokens: Sequence[str], i: int) -> float:
    if tokens[i].strip() != ":":
        return 0.0
    clock = 0 < i < len(tokens) - 1 and tokens[i - 1].strip().isdigit() and tokens[i + 1].isdigit()
    return 0.0 if clock else 10.0


def _quote_first_word(tokens: Sequence[str], i: int) -> float:
    if i == 0 or tokens[i - 1].strip() != '"' or tokens[i].strip() == '"':
        return 0.0
    opened = sum(t.strip() == '"' for t in tokens[:i]) % 2 == 1
    return 10.0 if opened else 0.0


def _new_sentence(tokens: Sequence[str], i: int) -> float:
    return 10.0 if i > 0 and tokens[i - 1].strip() in _ENDS and tokens[i].strip().isalpha() else 0.0


def _before_question_mark(tokens: Sequence[str], i: int) -> float:
    last = i + 1 < len(tokens) and tokens[i + 1].strip() == "?"
    return 10.0 if last and tokens[i].strip().isalpha() else 0.0


def _after_comma(tokens: Sequence[str], i: int) -> float:
    return 10.0 if i > 0 and tokens[i - 1] == "," and tokens[i].strip().isalnum() else 0.0


def _after_because(tokens: Sequence[str], i: int) -> float:
    for distance, value in ((1, 10.0), (2, 6.0), (3, 3.0)):
        if i - distance >= 0 and word(tokens[i - distance]) == "because":
            return value
    return 0.0


SYNTAX = (
    puzzle(
        "to-infinitive",
        "syntax",
        _after_to,
        true="verbs right after 'to' in an infinitive, such as to go or to see",
        decoy="the word 'to'",
        near_miss="any word right after 'to', including places such as to school",
        other="nouns naming places",
        sentences=(
            "We want to ⟦go⟧ to the beach on Sunday.",
            "She went to school early to ⟦finish⟧ her drawing.",
            "He drove to London to ⟦see⟧ his brother.",
            "They walked to the market together.",
            "It is hard to ⟦learn⟧ a language at forty.",
            "Give the book to your sister.",
            "I hope to ⟦win⟧, but I need to ⟦eat⟧ first.",
        ),
        decoy_words=("to",),
        silent=("school", "london", "market"),
    ),
    puzzle(
        "subject-pronouns",
        "syntax",
        lexicon(["i", "he", "she", "we", "they"]),
        true="personal pronouns used as the subject: I, he, she, we and they",
        decoy="the words 'gave', 'saw' and 'called'",
        near_miss="all personal pronouns, object forms such as him, them and us included",
        other="verbs in the past tense",
        sentences=(
            "⟦She⟧ gave him the keys after lunch.",
            "⟦They⟧ saw us at the station.",
            "⟦We⟧ called them twice, but nobody answered.",
            "The teacher thanked me and my brother.",
            "⟦He⟧ said ⟦I⟧ could borrow his bike.",
            "Give them the tickets before the show.",
            "After dinner ⟦we⟧ walked her dog to the park.",
        ),
        decoy_words=("gave", "saw", "called"),
        silent=("him", "them", "us", "me"),
    ),
    puzzle(
        "passive-participle",
        "syntax",
        _passive,
        true="past participles in the passive voice, right after was, were, is or been "
        "(was built, were stolen)",
        decoy="the words 'was' and 'were'",
        near_miss="any verb in the past tense",
        other="buildings and objects",
        sentences=(
            "The bridge was ⟦built⟧ in 1890.",
            "She painted the kitchen last week.",
            "Two bikes were ⟦stolen⟧ from the yard.",
            "The letter is ⟦written⟧ in blue ink.",
            "He opened the window and was ⟦seen⟧ by a neighbour.",
            "The shop was busy all morning.",
            "All the tickets have been ⟦sold⟧.",
            "They cleaned the car and sold it.",
        ),
        decoy_words=("was", "were"),
        silent=("painted", "opened", "cleaned", "sold"),
    ),
    puzzle(
        "relative-pronouns",
        "syntax",
        _relative,
        true="relative pronouns (who, which, whose) starting a clause that describes a noun",
        decoy="the words 'man', 'book' and 'city'",
        near_miss="question words such as who, what, where and which",
        other="nouns for people",
        sentences=(
            "The man ⟦who⟧ lives next door grows tomatoes.",
            "Who left the gate open?",
            "I lost the book ⟦which⟧ you gave me.",
            "What time does the film start?",
            "She met a writer ⟦whose⟧ novels sold well.",
            "The city, ⟦which⟧ sits on a hill, has cold winters.",
            "Where did you park the car?",
        ),
        decoy_words=("man", "book", "city"),
        silent=("who", "what", "where"),
    ),
    puzzle(
        "possessive-s",
        "syntax",
        _possessive,
        true="possessive nouns ending in 's, such as Anna's or the dog's",
        decoy="the words 'car', 'bowl' and 'coat'",
        near_miss="any word with an apostrophe, contractions such as it's and don't included",
        other="names of people",
        sentences=(
            "⟦Anna's⟧ car is parked outside.",
            "It's too late to call now.",
            "The ⟦dog's⟧ bowl was empty again.",
            "Don't touch my ⟦brother's⟧ coat.",
            "That's the best idea so far.",
            "We borrowed the ⟦teacher's⟧ car for the trip.",
            "The ⟦city's⟧ oldest bridge is closing.",
        ),
        decoy_words=("car", "bowl", "coat"),
        silent=("it's", "don't", "that's"),
    ),
)

NEGATION = (
    puzzle(
        "nt-contractions",
        "negation",
        _nt,
        true="negative contractions ending in n't, such as don't, can't and isn't",
        decoy="the words 'time', 'door' and 'answer'",
        near_miss="negation words such as not, never and no",
        other="verbs of ability such as can and could",
        sentences=(
            "I ⟦don't⟧ know the answer.",
            "She did not call, and he never wrote.",
            "We ⟦can't⟧ open the door without a key.",
            "It ⟦isn't⟧ time to leave yet.",
            "There is no milk left in the fridge.",
            "They ⟦wouldn't⟧ listen, so we ⟦didn't⟧ argue.",
            "He could not find the door in the dark.",
        ),
        decoy_words=("time", "door", "answer"),
        silent=("not", "never", "no"),
    ),
    puzzle(
        "negated-verb",
        "negation",
        _negated,
        true="the word right after a negation (not, never or n't): the thing being negated",
        decoy="the words 'rain', 'bus' and 'coffee'",
        near_miss="negation words such as not, never and don't",
        other="verbs of any kind",
        sentences=(
            "We did not ⟦stay⟧ long at the party.",
            "She never ⟦drinks⟧ coffee after noon.",
            "The bus was late because of the rain.",
            "I don't ⟦think⟧ the rain will stop.",
            "He could not ⟦find⟧ his ticket for the bus.",
            "They always drink coffee in the garden.",
            "It is not ⟦raining⟧ now, so we can go.",
        ),
        decoy_words=("rain", "bus", "coffee"),
        silent=("not", "never", "don't"),
    ),
    puzzle(
        "negative-pronouns",
        "negation",
        lexicon(["nobody", "nothing", "nowhere", "none"]),
        true="negative pronouns such as nobody, nothing, nowhere and none",
        decoy="the words 'house', 'found' and 'key'",
        near_miss="any negative word, such as not, no and never",
        other="words about places",
        sentences=(
            "⟦Nobody⟧ answered the phone at the house.",
            "We found ⟦nothing⟧ under the bed.",
            "There was no key on the table.",
            "The cat had ⟦nowhere⟧ to hide.",
            "She did not see the letter.",
            "⟦None⟧ of the doors were locked, and ⟦nothing⟧ was taken.",
            "He never found the key.",
        ),
        decoy_words=("house", "found", "key"),
        silent=("not", "no", "never"),
    ),
    puzzle(
        "refusal-verbs",
        "negation",
        lexicon(
            ["refuse", "refused", "refuses", "reject", "rejected", "deny", "denied", "declined"]
        ),
        true="verbs of refusing or rejecting, such as refuse, deny, reject and decline",
        decoy="the words 'offer', 'plan' and 'request'",
        near_miss="the word 'refused'",
        other="words about business and offices",
        sentences=(
            "The board ⟦rejected⟧ the plan on Monday.",
            "She ⟦refused⟧ to sign the contract.",
            "He accepted the offer with a smile.",
            "The company ⟦denied⟧ every claim in the report.",
            "They ⟦declined⟧ our request politely.",
            "Our plan was approved after a short vote.",
            "The guard ⟦refuses⟧ to open the gate before six.",
        ),
        decoy_words=("offer", "plan", "request"),
        firing=("rejected", "denied", "declined"),
    ),
)

PUNCTUATION = (
    puzzle(
        "exclamation",
        "punctuation",
        _exclamation,
        true="exclamation marks",
        decoy="the words 'wow', 'great' and 'look'",
        near_miss="punctuation that ends a sentence: full stops, question marks, exclamation marks",
        other="commas",
        sentences=(
            "Wow, what a view⟦!⟧",
            "Look out⟦!⟧ The car is coming.",
            "That was a great game, wasn't it?",
            "We won⟦!⟧ We actually won⟦!⟧",
            "Please close the window before you leave.",
            "Look at the map and tell me where we are.",
            "Happy birthday, dear Sam⟦!⟧",
        ),
        decoy_words=("wow", "great", "look"),
        silent=(".", "?"),
    ),
    puzzle(
        "hyphen",
        "punctuation",
        _hyphen,
        true="hyphens joining the parts of a compound word, as in well-known or part-time",
        decoy="the words 'well', 'known' and 'time'",
        near_miss="dashes and hyphens of every kind, including a dash between spaces",
        other="adjectives",
        sentences=(
            "He is a well⟦-⟧known author in this town.",
            "The job is part⟦-⟧time - but the pay is good.",
            "We left early - the roads were empty.",
            "My brother⟦-⟧in⟦-⟧law owns a twenty⟦-⟧year⟦-⟧old car.",
            "It was a well planned trip that took some time.",
            "The long⟦-⟧term plan is known to everyone.",
            "Turn left at the bridge and wait there.",
        ),
        decoy_words=("well", "known", "time"),
        silent=("-",),
    ),
    puzzle(
        "ellipsis",
        "punctuation",
        _ellipsis,
        true="the dots of an ellipsis (...)",
        decoy="the words 'well', 'maybe' and 'wait'",
        near_miss="full stops",
        other="pronouns",
        sentences=(
            "Well⟦...⟧ maybe we should wait.",
            "I thought it was over⟦...⟧ but it was not.",
            "The shop closes at six. We should hurry.",
            "And then⟦...⟧ nothing happened.",
            "Wait for me at the corner.",
            "She counted to three⟦...⟧ and jumped.",
            "Maybe next year. Maybe never.",
        ),
        decoy_words=("well", "maybe", "wait"),
        silent=(".",),
    ),
    puzzle(
        "list-colon",
        "punctuation",
        _list_colon,
        true="colons that introduce a list or an explanation (not those inside clock times)",
        decoy="the words 'list', 'bring' and 'following'",
        near_miss="every colon, including those in clock times such as 7:30",
        other="numbers",
        sentences=(
            "Bring three things⟦:⟧ a torch, a map and water.",
            "The train leaves at 7:30 tomorrow.",
            "One rule matters here⟦:⟧ be on time.",
            "Please read the following list carefully.",
            "We need the following⟦:⟧ eggs, flour and milk.",
            "The meeting ends at 16:45, and we bring lunch.",
            "The list was short⟦:⟧ bread and cheese.",
        ),
        decoy_words=("list", "bring", "following"),
        silent=(":",),
    ),
)

QUOTATION = (
    puzzle(
        "quoted-speech",
        "quotation",
        inside('"', '"'),
        true="everything inside quotation marks, i.e. the words someone says",
        decoy="the words 'said', 'asked' and 'replied'",
        near_miss="the quotation marks themselves",
        other="verbs of speaking",
        sentences=(
            'She said, "⟦We are late.⟧"',
            '"⟦Come in,⟧" he said, "⟦and sit down.⟧"',
            "The sign on the door said nothing.",
            'He asked, "⟦Where is the station?⟧"',
            "She replied that she was tired.",
            '"⟦Not again,⟧" sighed the old man.',
            "Mum always asked us to be quiet.",
            'The label read "⟦fragile⟧" in red letters.',
        ),
        decoy_words=("said", "asked", "replied"),
        silent=('"',),
    ),
    puzzle(
        "speech-verbs",
        "quotation",
        lexicon(["said", "asked", "whispered", "shouted", "answered", "told"]),
        true="verbs of speaking, such as said, asked and whispered",
        decoy="the words 'quiet', 'home' and 'door'",
        near_miss="the word 'said'",
        other="names of people",
        sentences=(
            '"Stay here," Tom ⟦whispered⟧.',
            "She ⟦asked⟧ where the keys were.",
            "The door was open and the room was quiet.",
            '"We are home," ⟦said⟧ Mia.',
            "He ⟦shouted⟧ across the yard, but nobody ⟦answered⟧.",
            "They walked home in silence.",
            "My father ⟦told⟧ me a story about the sea.",
        ),
        decoy_words=("quiet", "home", "door"),
        firing=("asked", "whispered", "shouted"),
    ),
    puzzle(
        "quote-first-word",
        "quotation",
        _quote_first_word,
        true="the first word of a quotation, right after the opening quotation mark",
        decoy="the words 'said', 'called' and 'smiled'",
        near_miss="every word inside quotation marks",
        other="capitalised words",
        sentences=(
            '"⟦Good⟧ morning," she called.',
            "He read the letter twice and smiled.",
            'The guide said, "⟦Follow⟧ me closely."',
            '"⟦Nobody⟧ move," said the officer.',
            "We called her name, but she did not turn.",
            'Mother wrote "⟦buy⟧ bread" on the list.',
            '"⟦Really⟧?" he asked. "⟦That⟧ is amazing."',
        ),
        decoy_words=("said", "called", "smiled"),
        silent=("morning", "bread", "move"),
    ),
)

POSITION = (
    puzzle(
        "new-sentence-start",
        "position",
        _new_sentence,
        true="the first word of a sentence that follows another sentence in the text, right "
        "after a full stop, question mark or exclamation mark",
        decoy="the words 'rain', 'hungry' and 'attic'",
        near_miss="the first word of every sentence, the very first word of the text included",
        other="pronouns",
        sentences=(
            "Lunch was late. ⟦Everyone⟧ was hungry.",
            "The shop opened at nine and closed at noon.",
            "Did you hear that? ⟦It⟧ came from the attic.",
            "Soon the rain stopped and we went out.",
            "Stop! ⟦The⟧ floor is wet.",
            "After the film we walked home slowly.",
            "Rain fell for hours. ⟦Nobody⟧ minded.",
        ),
        decoy_words=("rain", "hungry", "attic"),
        silent=("lunch", "soon", "stop", "after"),
    ),
    puzzle(
        "before-question-mark",
        "position",
        _before_question_mark,
        true="the last word of a question, right before the question mark",
        decoy="question words such as where, why and what",
        near_miss="question marks",
        other="pronouns such as you and we",
        sentences=(
            "Where did you put the ⟦keys⟧?",
            "Why is the sky so ⟦dark⟧?",
            "I know where the station is.",
            "What time does the train ⟦leave⟧? I forgot.",
            "Can we stay a little ⟦longer⟧?",
            "We wondered why the road was closed.",
            "She asked me what I wanted for dinner.",
        ),
        decoy_words=("where", "why", "what"),
        silent=("?",),
    ),
    puzzle(
        "after-comma",
        "position",
        _after_comma,
        true="the first word after a comma",
        decoy="the words 'garden', 'window' and 'morning'",
        near_miss="commas",
        other="nouns",
        sentences=(
            "In the morning, ⟦we⟧ fed the birds.",
            "Apples, ⟦pears⟧, ⟦plums⟧ and cherries grew in the garden.",
            "The window was open all night.",
            "Yes, ⟦I⟧ will come to the party.",
            "My sister, ⟦who⟧ lives in Rome, ⟦is⟧ visiting.",
            "We painted the fence and the gate.",
            "If it rains, ⟦close⟧ the window.",
        ),
        decoy_words=("garden", "window", "morning"),
        silent=(",",),
    ),
    puzzle(
        "in-brackets",
        "position",
        inside("(", ")"),
        true="the words inside round brackets",
        decoy="the words 'museum', 'report' and 'price'",
        near_miss="the brackets themselves",
        other="numbers",
        sentences=(
            "The museum (⟦open daily⟧) is near the park.",
            "Add the salt (⟦about a spoon⟧) at the end.",
            "The report was sent to every office.",
            "Prices rose sharply (⟦see page 4⟧) this year.",
            "He waited for the bus in the rain.",
            "The price includes breakfast (⟦but not dinner⟧).",
            "Our teacher (⟦Mr Hale⟧) retired in June.",
        ),
        decoy_words=("museum", "report", "price"),
        silent=("(", ")"),
    ),
    puzzle(
        "after-because",
        "position",
        _after_because,
        true="the words just after 'because', strongest on the first and fading over the next two",
        decoy="the words 'stayed', 'home' and 'cancelled'",
        near_miss="the word 'because'",
        other="reasons and causes such as rain or illness",
        sentences=(
            "We stayed home because ⟦the roads were⟧ icy.",
            "The match was cancelled because ⟦of heavy rain⟧.",
            "She left early to catch the last bus.",
            "Because ⟦it was late⟧, we took a taxi.",
            "He smiled because ⟦his team won⟧ again.",
            "They stayed home and watched a film.",
            "I am tired because ⟦I slept badly⟧.",
        ),
        decoy_words=("stayed", "home", "cancelled"),
        silent=("because",),
    ),
)

PUZZLES: tuple[Puzzle, ...] = (*SYNTAX, *NEGATION, *PUNCTUATION, *QUOTATION, *POSITION)
"""This module's puzzles, in order."""
