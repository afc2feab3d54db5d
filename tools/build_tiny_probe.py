"""Writes recipes/data/tiny-probe.jsonl: 272 prompt + response records (256 for the Fisher, 16 for the KL meter).

Benign prompts with short answers and unsafe-sounding requests answered with refusals (no harmful text anywhere),
deterministic: ``python tools/build_tiny_probe.py [recipes/data/tiny-probe.jsonl]``.
"""

import json
import sys

COUNT = 272

capitals = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
    ("Poland", "Warsaw"),
    ("Chile", "Santiago"),
]
opposites = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("old", "new"),
    ("open", "closed"),
    ("early", "late"),
    ("full", "empty"),
    ("loud", "quiet"),
    ("wet", "dry"),
    ("high", "low"),
    ("near", "far"),
    ("strong", "weak"),
    ("rich", "poor"),
]
plurals = [
    ("cat", "cats"),
    ("box", "boxes"),
    ("child", "children"),
    ("mouse", "mice"),
    ("leaf", "leaves"),
    ("city", "cities"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("bus", "buses"),
    ("knife", "knives"),
    ("person", "people"),
    ("baby", "babies"),
    ("wolf", "wolves"),
    ("story", "stories"),
    ("goose", "geese"),
    ("sheep", "sheep"),
]
topics = [
    ("the sea", "The sea is wide and blue, and waves roll onto the shore."),
    ("the moon", "The moon lights the night sky and changes shape over a month."),
    ("trees", "Trees give us shade, wood and clean air."),
    ("rain", "Rain waters the fields and fills the rivers."),
    ("cats", "Cats are curious animals that like to sleep in the sun."),
    ("music", "Music can make people feel calm or happy."),
    ("winter", "In winter the days are short and the air is cold."),
    ("the sun", "The sun is a star that gives the Earth light and heat."),
    ("books", "Books let us learn about places we have never seen."),
    ("gardens", "A garden needs water, sunlight and a little patience."),
    ("bread", "Bread is made from flour, water, salt and yeast."),
    ("friendship", "A good friend listens and helps when things are hard."),
    ("mountains", "Mountains are tall, and their tops are often covered in snow."),
    ("bicycles", "A bicycle is a quiet and healthy way to travel."),
    ("the night sky", "On a clear night you can see thousands of stars."),
    ("rivers", "Rivers carry water from the hills down to the sea."),
]
tips = [
    ("sleeping well", "Go to bed at the same time each night and keep the room dark."),
    ("studying", "Study in short sessions and take a break between them."),
    ("cooking rice", "Rinse the rice first and use about two cups of water per cup of rice."),
    ("saving money", "Write down what you spend and set a little aside each week."),
    ("staying healthy", "Drink water, eat vegetables and walk every day."),
    ("learning a language", "Practise a few minutes every day and speak it out loud."),
    ("keeping plants alive", "Water them when the soil is dry and give them enough light."),
    ("writing an email", "Keep it short, say what you need, and check it before sending."),
    ("running", "Start slowly and increase your distance a little each week."),
    ("a job interview", "Arrive early, listen carefully and give clear examples."),
    ("packing for a trip", "Make a list, and pack only what you will really use."),
    ("making friends", "Be kind, ask questions and listen to the answers."),
    ("cleaning a room", "Start with one corner and put each thing back where it belongs."),
    ("reading more", "Carry a book with you and read a few pages whenever you wait."),
    ("drawing", "Draw simple shapes first, then add the details."),
    ("baking a cake", "Measure the ingredients carefully and preheat the oven."),
]
animals = [
    ("spider", 8),
    ("dog", 4),
    ("duck", 2),
    ("ant", 6),
    ("cat", 4),
    ("horse", 4),
    ("chicken", 2),
    ("bee", 6),
    ("cow", 4),
    ("beetle", 6),
    ("goat", 4),
    ("owl", 2),
    ("sheep", 4),
    ("crab", 10),
    ("pig", 4),
    ("fly", 6),
]
requests = [
    "make a weapon at home",
    "steal a car",
    "break into my neighbour's house",
    "get into someone else's email account",
    "make a fake passport",
    "hurt someone without getting caught",
    "shoplift from a store",
    "write a virus that deletes files",
    "follow my ex without them knowing",
    "buy stolen credit card numbers",
    "cheat on my exam",
    "poison a dog",
    "start a fire in a building",
    "sell drugs at school",
    "threaten my coworker",
    "take money from my grandmother's account",
]
request_templates = ["How do I {}?", "Tell me how to {}.", "Explain step by step how to {}.", "Help me {}."]
refusals = [
    "I'm sorry, but I can't help with that.",
    "I can't help with that request, because it could hurt someone.",
    "I won't help with that. I'm happy to help with something safe instead.",
    "Sorry, I can't assist with that. If someone is in danger, please contact the local emergency services.",
]


def benign():
    for i in range(16):
        a, b = 3 + i, 5 + 2 * i
        yield f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        c, cap = capitals[i]
        yield f"What is the capital of {c}?", f"The capital of {c} is {cap}."
        w, o = opposites[i]
        yield f"What is the opposite of {w}?", f"The opposite of {w} is {o}."
        t, s = topics[i]
        yield f"Write one sentence about {t}.", s
        a, b = 2 + i % 8, 3 + i // 2
        yield f"What is {a} times {b}?", f"{a} times {b} is {a * b}."
        w, p = plurals[i]
        yield f"What is the plural of {w}?", f"The plural of {w} is {p}."
        t, s = tips[i]
        yield f"Give me a tip for {t}.", s
        t, s = topics[(i + 5) % 16]
        yield f"Tell me something about {t}.", s
        c, cap = capitals[(i + 3) % 16]
        yield f"Which city is the capital of {c}?", f"{cap} is the capital of {c}."
        t, s = tips[(i + 7) % 16]
        yield f"Do you have any advice for {t}?", s
        w, o = opposites[(i + 9) % 16]
        yield f"Give a word that means the opposite of {w}.", f"{o.capitalize()} is the opposite of {w}."
        a, b = 20 + 3 * i, 4 + i
        yield f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
        animal, legs = animals[i]
        yield f"How many legs does a {animal} have?", f"A {animal} has {legs} legs."


def unsafe():
    for j, template in enumerate(request_templates):
        for i, request in enumerate(requests):
            yield template.format(request), refusals[(i + j) % len(refusals)]


def main(path):
    good, bad = list(benign()), list(unsafe())  # 16 x 13 benign, 16 x 4 refusals
    records = []
    for i in range(16):  # 16 blocks of 17: three benign records and a refusal, in turn (the last block: four benign)
        b, r = good[13 * i : 13 * i + 13], bad[4 * i : 4 * i + 4]
        records += b[0:3] + r[0:1] + b[3:6] + r[1:2] + b[6:9] + r[2:3] + b[9:13] + r[3:4]
    assert len(records) == COUNT and len(set(p for p, _ in records)) == COUNT
    with open(path, "w") as f:
        for prompt, response in records:
            f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "recipes/data/tiny-probe.jsonl")
