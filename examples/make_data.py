"""Writes the small example datasets under examples/data/ (already committed; rerun to regenerate).

All phrases below were written for this project. Sentences are composed from them with a fixed
seed, so the files are reproducible byte for byte:

    python examples/make_data.py
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent / "data"

# ----------------------------------------------------------------------------- sentiment
EN_THINGS = [
    "movie",
    "film",
    "restaurant",
    "hotel room",
    "phone",
    "book",
    "laptop",
    "concert",
    "coffee",
    "service",
    "museum tour",
    "train ride",
    "pizza",
    "novel",
    "camera",
    "headphones",
    "game",
    "show",
]
EN_POS = [
    "was wonderful",
    "was absolutely great",
    "made me happy",
    "is worth every penny",
    "exceeded my expectations",
    "was a delight from start to finish",
    "is the best I have tried",
    "was charming and fun",
    "felt warm and friendly",
    "works perfectly",
    "was beautiful",
    "left me smiling",
    "is highly recommended",
    "was excellent",
    "was a pleasant surprise",
    "is fantastic",
]
EN_NEG = [
    "was terrible",
    "was a complete waste of money",
    "made me angry",
    "broke after two days",
    "was boring and far too long",
    "is the worst I have tried",
    "was dirty and noisy",
    "felt cold and rude",
    "does not work at all",
    "was ugly",
    "left me disappointed",
    "is not recommended",
    "was awful",
    "was a horrible experience",
    "tasted bland",
    "is a disaster",
]
EN_OPEN = ["The", "This", "Our", "My", "That", "Honestly, the", "Overall the", "I think the"]
EN_POS_FREE = [
    "I loved every minute of it.",
    "Great value, I would buy it again.",
    "Five stars, no complaints.",
    "What a lovely day we had there.",
    "The staff were kind and helpful.",
    "Everything went smoothly.",
    "Brilliant acting and a clever story.",
    "I am very satisfied with this purchase.",
]
EN_NEG_FREE = [
    "I hated every minute of it.",
    "Poor value, I will never buy it again.",
    "One star, avoid it.",
    "What a miserable day we had there.",
    "The staff were rude and slow.",
    "Nothing worked as promised.",
    "Wooden acting and a silly story.",
    "I am very unhappy with this purchase.",
]
ZH_THINGS = [
    "这部电影",
    "这家餐厅",
    "这个手机",
    "这本书",
    "这家酒店",
    "这次旅行",
    "这杯咖啡",
    "这场音乐会",
    "北京的这家店",
    "上海的这个博物馆",
    "这台电脑",
    "这个游戏",
]
ZH_POS = [
    "非常好看",
    "真的太棒了",
    "让我很开心",
    "物超所值",
    "超出了我的期待",
    "服务很热情",
    "质量很好",
    "值得推荐",
    "非常精彩",
    "我很喜欢",
    "美极了",
    "让人满意",
]
ZH_NEG = [
    "太难看了",
    "真的太差了",
    "让我很生气",
    "完全不值这个价",
    "让我非常失望",
    "服务态度很差",
    "质量太差",
    "不推荐",
    "无聊透顶",
    "我很讨厌",
    "脏乱不堪",
    "让人不满意",
]


def sentiment(rng: random.Random) -> list[tuple[int, str]]:
    rows = set()
    while len(rows) < 240:
        label = rng.randrange(2)
        if rng.random() < 0.15:
            text = rng.choice(EN_POS_FREE if label else EN_NEG_FREE)
        else:
            text = f"{rng.choice(EN_OPEN)} {rng.choice(EN_THINGS)} {rng.choice(EN_POS if label else EN_NEG)}."
        rows.add((label, text))
    while len(rows) < 360:
        label = rng.randrange(2)
        end = rng.choice(["。", "！", "，下次还来。" if label else "，再也不来了。"])
        rows.add((label, f"{rng.choice(ZH_THINGS)}{rng.choice(ZH_POS if label else ZH_NEG)}{end}"))
    out = sorted(rows)
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- NER
EN_PEOPLE = [
    ["Alice", "Johnson"],
    ["Bob", "Miller"],
    ["Maria", "Garcia"],
    ["John"],
    ["Emma", "Watson"],
    ["Li", "Wei"],
    ["Zhang", "San"],
    ["David", "Brown"],
    ["Sarah"],
    ["Omar", "Khan"],
    ["Yuki", "Tanaka"],
    ["Peter", "Parker"],
    ["Anna", "Schmidt"],
    ["Carlos"],
    ["Fatima", "Ali"],
    ["George", "Smith"],
]
EN_PLACES = [
    ["Paris"],
    ["London"],
    ["New", "York"],
    ["Beijing"],
    ["Shanghai"],
    ["Berlin"],
    ["Tokyo"],
    ["San", "Francisco"],
    ["Rome"],
    ["Cairo"],
    ["Madrid"],
    ["Hong", "Kong"],
    ["Chengdu"],
    ["Sydney"],
    ["Los", "Angeles"],
    ["Nanjing"],
]
EN_TEMPLATES = [
    "{P} lives in {L} .",
    "{P} flew from {L} to {L} .",
    "Yesterday {P} met {P} in {L} .",
    "{P} was born in {L} but moved to {L} .",
    "The trip to {L} was planned by {P} .",
    "{P} and {P} visited {L} last summer .",
    "In {L} , {P} opened a small bakery .",
    "{P} says {L} is beautiful in spring .",
    "We saw {P} at the airport in {L} .",
    "{P} works in {L} .",
    "Nobody in {L} knows {P} .",
    "{P} called {P} from {L} .",
]
ZH_PEOPLE = [list("王小明"), list("李华"), list("王芳"), list("李明"), list("张伟"), list("王丽"), list("李雷")]
ZH_PLACES = [list("北京"), list("上海"), list("广州"), list("南京"), list("成都"), list("西安"), list("天津")]
ZH_TEMPLATES = [
    "{P}住在{L}。",
    "{P}从{L}去{L}。",
    "{P}和{P}在{L}见面。",
    "{P}在{L}工作。",
    "{L}的{P}是老师。",
    "{P}出生在{L}。",
]


def _fill(rng, template, people, places, zh):
    words, tags = [], []
    parts = template.replace("{P}", "\0P\0").replace("{L}", "\0L\0").split("\0")
    for part in parts:
        if part in ("P", "L"):
            ent = rng.choice(people if part == "P" else places)
            kind = "PER" if part == "P" else "LOC"
            words += ent
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(ent) - 1)
        elif part:
            toks = list(part) if zh else part.split()
            words += toks
            tags += ["O"] * len(toks)
    return words, tags


def ner(rng: random.Random) -> list[tuple[list[str], list[str]]]:
    """160 training sentences, then 40 held-out ones whose names and places never occur in training."""
    seen, train, test = set(), [], []
    en_p, en_l, zh_p, zh_l = EN_PEOPLE[:-4], EN_PLACES[:-4], ZH_PEOPLE[:-2], ZH_PLACES[:-2]
    splits = [
        (train, 120, 40, en_p, en_l, zh_p, zh_l),
        (test, 30, 10, EN_PEOPLE[-4:], EN_PLACES[-4:], ZH_PEOPLE[-2:], ZH_PLACES[-2:]),
    ]
    for out, n_en, n_zh, ep, el, zp, zl in splits:
        while len(out) < n_en + n_zh:
            zh = len(out) >= n_en
            words, tags = _fill(
                rng, rng.choice(ZH_TEMPLATES if zh else EN_TEMPLATES), zp if zh else ep, zl if zh else el, zh
            )
            if tuple(words) not in seen:
                seen.add(tuple(words))
                out.append((words, tags))
        rng.shuffle(out)
    return train + test


# ----------------------------------------------------------------------------- pretraining text
TOPICS = {
    "river": [
        "The river starts high in the mountains.",
        "Snow melts in spring and feeds the river.",
        "The water runs fast through the narrow valley.",
        "Farmers use the river to water their fields.",
        "Near the sea the river grows wide and slow.",
        "Boats carry rice and wood down to the port.",
    ],
    "bakery": [
        "The baker wakes up before dawn.",
        "She mixes flour, water and salt in a large bowl.",
        "The dough rests for an hour under a cloth.",
        "Then the loaves go into the hot oven.",
        "By seven the shop smells of fresh bread.",
        "Students buy warm rolls on their way to school.",
    ],
    "train": [
        "The night train leaves the station at ten.",
        "Passengers find their beds in small cabins.",
        "Outside the window the city lights fade away.",
        "The train crosses a long bridge after midnight.",
        "In the morning the guard brings hot tea.",
        "At noon the train reaches the capital.",
    ],
    "garden": [
        "My grandmother keeps a garden behind the house.",
        "She plants tomatoes and beans every April.",
        "In summer the bees visit her flowers.",
        "We pick the ripe fruit together in August.",
        "In autumn she saves seeds for the next year.",
        "In winter the garden sleeps under the snow.",
    ],
    "library": [
        "The old library stands in the town square.",
        "Its shelves hold thousands of books.",
        "Children come on Saturday to hear stories.",
        "The librarian knows every reader by name.",
        "A quiet room upstairs is kept for study.",
        "The library closes at eight in the evening.",
    ],
    "storm": [
        "Dark clouds gathered over the hills.",
        "The wind grew strong and the trees began to bend.",
        "Heavy rain fell for the whole afternoon.",
        "The power went out in the village.",
        "By night the storm moved out to sea.",
        "In the morning the sky was clear and blue.",
    ],
    "market": [
        "The market opens early on Sunday.",
        "Traders set up stalls of fruit and fish.",
        "People walk slowly and compare prices.",
        "A man sells hot noodles from a cart.",
        "By noon most of the fish is gone.",
        "In the evening the square is swept clean.",
    ],
    "school": [
        "The school bell rings at eight.",
        "The pupils hurry into their classroom.",
        "The first lesson is mathematics.",
        "After lunch they play football in the yard.",
        "The last lesson is music.",
        "At four the children walk home together.",
    ],
}


def pretrain_text() -> str:
    return "\n\n".join("\n".join(sents) for sents in TOPICS.values()) + "\n"


def main() -> None:
    rng = random.Random(1234)
    HERE.mkdir(exist_ok=True)
    with open(HERE / "sentiment.tsv", "w", encoding="utf-8") as f:
        f.write("label\ttext\n")
        for label, text in sentiment(rng):
            f.write(f"{label}\t{text}\n")
    with open(HERE / "ner.tsv", "w", encoding="utf-8") as f:
        for words, tags in ner(rng):
            for w, t in zip(words, tags):
                f.write(f"{w}\t{t}\n")
            f.write("\n")
    (HERE / "pretrain.txt").write_text(pretrain_text(), encoding="utf-8")


if __name__ == "__main__":
    main()
