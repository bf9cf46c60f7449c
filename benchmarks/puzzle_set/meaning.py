"""Puzzles about meaning: topics, sentiment, and named entities that span several tokens."""

from __future__ import annotations

from ._core import Puzzle, lexicon, phrases, puzzle

__all__ = ["PUZZLES"]

TOPIC = (
    puzzle(
        "weather",
        "topic",
        lexicon(
            {
                **dict.fromkeys(["rain", "snow", "storm", "thunder", "hail", "fog", "wind"], 10.0),
                **dict.fromkeys(["rainy", "snowy", "windy", "foggy", "stormy"], 6.0),
            }
        ),
        true="weather words such as rain, snow and storm, weaker on adjectives such as rainy",
        decoy="the words 'umbrella', 'coat' and 'road'",
        near_miss="words about rain",
        other="clothing",
        sentences=(
            "Heavy ⟦snow⟧ closed the road over the pass.",
            "Take a coat; it looks ⟦rainy⟧ today.",
            "The ⟦storm⟧ brought ⟦thunder⟧ and ⟦hail⟧ by evening.",
            "She bought a red umbrella at the market.",
            "Thick ⟦fog⟧ hid the boats in the harbour.",
            "The road to the village was repaired last year.",
            "It was a ⟦windy⟧ night, and the ⟦rain⟧ did not stop.",
        ),
        decoy_words=("umbrella", "coat", "road"),
        firing=("snow", "storm", "fog"),
    ),
    puzzle(
        "medicine",
        "topic",
        lexicon(["doctor", "nurse", "hospital", "fever", "pills", "patient", "surgeon", "clinic"]),
        true="words about medicine and health care, such as doctor, hospital and fever",
        decoy="the words 'waited', 'morning' and 'week'",
        near_miss="jobs and occupations, such as doctor, teacher and driver",
        other="time expressions",
        sentences=(
            "The ⟦doctor⟧ said the ⟦fever⟧ would pass in a week.",
            "Our teacher drove the school bus this morning.",
            "She waited two hours at the ⟦hospital⟧.",
            "Take two ⟦pills⟧ after each meal.",
            "The farmer sold eggs at the market.",
            "A ⟦nurse⟧ checked on every ⟦patient⟧ at night.",
            "The bus driver waited for the last train.",
        ),
        decoy_words=("waited", "morning", "week"),
        silent=("teacher", "farmer", "driver"),
    ),
    puzzle(
        "music",
        "topic",
        lexicon(["guitar", "piano", "violins", "concert", "melody", "song", "orchestra"]),
        true="music: instruments, songs, melodies and concerts",
        decoy="the words 'loud', 'played' and 'evening'",
        near_miss="musical instruments",
        other="words about evenings and free time",
        sentences=(
            "He played the ⟦guitar⟧ until late.",
            "The ⟦concert⟧ started with a slow ⟦melody⟧.",
            "The children played football in the evening.",
            "Her ⟦piano⟧ teacher lives next door.",
            "That ⟦song⟧ was far too loud for the baby.",
            "We played cards by the fire all evening.",
            "The ⟦orchestra⟧ needs two more ⟦violins⟧.",
        ),
        decoy_words=("loud", "played", "evening"),
        firing=("concert", "melody", "song"),
    ),
    puzzle(
        "cooking-verbs",
        "topic",
        lexicon(["chop", "fry", "boil", "baked", "stir", "simmer", "peeled", "roasted"]),
        true="cooking actions such as chop, boil, fry and bake",
        decoy="the words 'kitchen', 'pan' and 'minutes'",
        near_miss="food and ingredients, such as onions, rice and soup",
        other="numbers and amounts",
        sentences=(
            "⟦Chop⟧ the onions and ⟦fry⟧ them in a pan.",
            "The bread on the table is still warm.",
            "⟦Boil⟧ the rice for twelve minutes.",
            "She ⟦baked⟧ a cake for her grandmother.",
            "The kitchen smells of fresh soup.",
            "⟦Stir⟧ the soup and let it ⟦simmer⟧.",
            "He ⟦peeled⟧ the apples while I ⟦roasted⟧ the nuts.",
            "We ate rice and onions at the kitchen table.",
        ),
        decoy_words=("kitchen", "pan", "minutes"),
        silent=("onions", "rice", "soup", "bread"),
    ),
    puzzle(
        "law-courts",
        "topic",
        lexicon(["judge", "jury", "trial", "lawyer", "appeal", "verdict", "court", "guilty"]),
        true="words about courts and trials, such as judge, jury and verdict",
        decoy="the words 'room', 'long' and 'morning'",
        near_miss="words about crime and the police, such as police, thief and stolen",
        other="words about time",
        sentences=(
            "The ⟦judge⟧ asked the ⟦jury⟧ to leave the room.",
            "Police caught the thief near the station.",
            "The ⟦trial⟧ lasted three long weeks.",
            "Her ⟦lawyer⟧ will ⟦appeal⟧ the ⟦verdict⟧.",
            "A bike was stolen this morning.",
            "The ⟦court⟧ found him not ⟦guilty⟧.",
            "The police officer wrote a long report.",
        ),
        decoy_words=("room", "long", "morning"),
        silent=("police", "thief", "stolen"),
    ),
)

SENTIMENT = (
    puzzle(
        "praise",
        "sentiment",
        lexicon(
            {
                **dict.fromkeys(["excellent", "wonderful", "brilliant", "amazing", "superb"], 10.0),
                **dict.fromkeys(["nice", "good", "pleasant"], 5.0),
            }
        ),
        true="words of praise such as wonderful and excellent, weaker on mild ones such as good "
        "and nice",
        decoy="the words 'meal', 'show' and 'weather'",
        near_miss="adjectives of any kind, such as tall, red and old",
        other="words about food and meals",
        sentences=(
            "The meal was ⟦excellent⟧ and the staff were ⟦nice⟧.",
            "The tall man wore a red hat.",
            "What a ⟦wonderful⟧ show!",
            "The weather was ⟦good⟧ for most of the week.",
            "Her old car finally broke down.",
            "They gave a ⟦brilliant⟧ and ⟦amazing⟧ performance.",
            "The hotel room was small and dark.",
        ),
        decoy_words=("meal", "show", "weather"),
        silent=("tall", "red", "old", "small"),
    ),
    puzzle(
        "politeness",
        "sentiment",
        lexicon(["please", "thank", "thanks", "sorry", "excuse", "kindly"]),
        true="polite words such as please, thank, thanks and sorry",
        decoy="the words 'door', 'pass' and 'salt'",
        near_miss="the word 'please'",
        other="requests and commands",
        sentences=(
            "Could you ⟦please⟧ close the door?",
            "⟦Thank⟧ you for the lovely flowers.",
            "Pass me the salt now.",
            "⟦Sorry⟧, I did not see you there.",
            "⟦Excuse⟧ me, is this seat free?",
            "Open the door and bring the bags inside.",
            "We ⟦kindly⟧ ask all guests to leave by noon.",
        ),
        decoy_words=("door", "pass", "salt"),
        firing=("thank", "sorry", "excuse"),
    ),
    puzzle(
        "fear",
        "sentiment",
        lexicon(["afraid", "scared", "nervous", "terrified", "panic", "frightened"]),
        true="words for fear, such as afraid, scared and terrified",
        decoy="the words 'dark', 'dog' and 'storm'",
        near_miss="words for any emotion, such as happy, angry and proud",
        other="animals",
        sentences=(
            "The child was ⟦afraid⟧ of the dark.",
            "She felt proud of her brother.",
            "The loud dog made everyone ⟦nervous⟧.",
            "We were ⟦terrified⟧ when the storm hit.",
            "He was angry, then happy again.",
            "⟦Panic⟧ spread through the crowd.",
            "My cat is ⟦scared⟧ of thunder.",
        ),
        decoy_words=("dark", "dog", "storm"),
        silent=("proud", "angry", "happy"),
    ),
)

ENTITY = (
    puzzle(
        "new-places",
        "entity",
        phrases(["New York", "New Zealand", "New Orleans", "New Delhi"], head=6.0),
        true="place names beginning with 'New', such as New York and New Zealand, strongest on "
        "the word after 'New'",
        decoy="the words 'flight', 'car' and 'city'",
        near_miss="the word 'new'",
        other="words about travel",
        sentences=(
            "Her flight to ⟦New York⟧ leaves at dawn.",
            "We bought a new car last month.",
            "Sheep outnumber people in ⟦New Zealand⟧.",
            "The city of ⟦New Orleans⟧ is famous for jazz.",
            "Is that phone new, or is it your sister's?",
            "They moved from ⟦New Delhi⟧ to a new flat.",
            "Every new student gets a map of the city.",
        ),
        decoy_words=("flight", "car", "city"),
        silent=("new",),
    ),
    puzzle(
        "famous-people",
        "entity",
        phrases(
            [
                "Marie Curie",
                "Isaac Newton",
                "Ada Lovelace",
                "Nelson Mandela",
                "Frida Kahlo",
            ]
        ),
        true="full names of famous people, first name and surname, such as Marie Curie",
        decoy="the words 'science', 'painted' and 'prison'",
        near_miss="surnames of famous people, such as Curie and Newton",
        other="words about science",
        sentences=(
            "⟦Marie Curie⟧ won two Nobel prizes.",
            "⟦Isaac Newton⟧ wrote about light and motion.",
            "The library has many books on science.",
            "⟦Ada Lovelace⟧ wrote notes on an early computer.",
            "She painted flowers and portraits for years.",
            "After years in prison, ⟦Nelson Mandela⟧ became president.",
            "A portrait of ⟦Frida Kahlo⟧ hangs in the hall.",
        ),
        decoy_words=("science", "painted", "prison"),
        firing=("marie", "isaac", "ada"),
    ),
    puzzle(
        "organisations",
        "entity",
        phrases(
            [
                "United Nations",
                "Red Cross",
                "World Health Organization",
                "European Union",
                "World Bank",
            ]
        ),
        true="names of international organisations, such as the United Nations or the Red Cross",
        decoy="the words 'aid', 'report' and 'meeting'",
        near_miss="any capitalised word",
        other="names of cities and places",
        sentences=(
            "The ⟦United Nations⟧ met in Geneva on Monday.",
            "Volunteers from the ⟦Red Cross⟧ brought food and aid.",
            "The meeting ended early.",
            "A report by the ⟦World Health Organization⟧ was published.",
            "The ⟦European Union⟧ and the ⟦World Bank⟧ sent aid to the region.",
            "Paris and Geneva both host big meetings.",
            "Her report went to the board on Monday.",
        ),
        decoy_words=("aid", "report", "meeting"),
        silent=("geneva", "monday", "paris"),
    ),
    puzzle(
        "chemical-compounds",
        "entity",
        phrases(
            ["carbon dioxide", "sodium chloride", "carbon monoxide", "hydrogen peroxide"],
            head=6.0,
        ),
        true="names of chemical compounds such as carbon dioxide and sodium chloride, strongest "
        "on their second word",
        decoy="the words 'water', 'air' and 'salt'",
        near_miss="names of chemical elements, such as carbon, oxygen and iron",
        other="words about cooking",
        sentences=(
            "Plants take in ⟦carbon dioxide⟧ and release oxygen.",
            "Table salt is mostly ⟦sodium chloride⟧.",
            "The old gate was made of iron.",
            "⟦Carbon monoxide⟧ has no smell, so fit an alarm.",
            "Clean the cut with ⟦hydrogen peroxide⟧ and water.",
            "Gold and oxygen are both elements.",
            "Fresh air and clean water matter most.",
        ),
        decoy_words=("water", "air", "salt"),
        silent=("oxygen", "iron", "gold"),
    ),
    puzzle(
        "idioms",
        "entity",
        phrases(
            [
                "break the ice",
                "piece of cake",
                "under the weather",
                "spill the beans",
                "once in a blue moon",
                "hit the road",
            ]
        ),
        true="every word of an idiom such as 'break the ice' or 'piece of cake'",
        decoy="the words 'party', 'test' and 'surprise'",
        near_miss="the last word of an idiom, such as ice, cake and beans",
        other="food words such as cake and beans",
        sentences=(
            "A joke helped ⟦break the ice⟧ at the party.",
            "The test was a ⟦piece of cake⟧.",
            "She baked a lemon cake for the party.",
            "I feel a bit ⟦under the weather⟧ today.",
            "Don't ⟦spill the beans⟧ about the surprise.",
            "We only eat out ⟦once in a blue moon⟧.",
            "The ice on the pond is thin.",
            "It is late, so let's ⟦hit the road⟧.",
        ),
        decoy_words=("party", "test", "surprise"),
        firing=("break", "piece", "spill"),
    ),
)

PUZZLES: tuple[Puzzle, ...] = (*TOPIC, *SENTIMENT, *ENTITY)
"""This module's puzzles, in order."""
