"""Suggest a reason category from the customer's own words (Chinese and English).

A weighted phrase model: Chinese is matched on phrases (substrings), which sidesteps word
segmentation for the short, formulaic complaints after-sales sees; English on lower-cased words
and phrases. Each category sums the weights of its matched phrases; the suggestion is the top
category with its share of the total as confidence, and the phrases that drove it. Agents'
corrections (feedback_records) can add phrases over time (see `learned_phrases`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# category -> [(phrase, weight)]. Weight 3: nearly decisive; 2: strong; 1: a hint.
LEXICON: dict[str, list[tuple[str, float]]] = {
    "description.host_claim_mismatch": [
        ("主播说", 3), ("主播介绍", 3), ("主播讲", 3), ("直播间说", 3), ("直播里说", 3), ("直播时说", 3), ("主播承诺", 3),
        ("主播保证", 3), ("直播间承诺", 3), ("和主播说的不一样", 3), ("跟主播说的不一样", 3), ("主播说的", 3), ("直播说", 2),
        ("主播", 0.5), ("直播间", 0.5), ("口播", 2), ("宣传", 1),
        ("host said", 3), ("the host", 2), ("streamer said", 3), ("in the live", 2), ("on the stream", 2), ("live stream", 1.5),
        ("host claimed", 3), ("presenter said", 3),
    ],
    "description.not_as_described": [
        ("页面写", 2.5), ("写的是", 1.5), ("标签写", 1.5), ("涤纶", 1.5), ("listing said", 3), ("product page", 2), ("nothing like", 2.5), ("pictures", 1),
        ("与描述不符", 3), ("和描述不符", 3), ("跟描述不一样", 3), ("描述不符", 3), ("和图片不一样", 3), ("与图片不符", 3),
        ("跟图片不一样", 3), ("色差", 2.5), ("颜色不一样", 2), ("和详情页", 2.5), ("详情页", 1.5), ("图片", 1), ("实物", 1.5),
        ("材质不对", 2), ("不是纯棉", 1.5), ("化纤", 1), ("货不对板", 3), ("以次充好", 2), ("缩水", 1), ("假的材质", 1.5),
        ("not as described", 3), ("different from the picture", 3), ("doesn't match the description", 3),
        ("does not match the description", 3), ("not like the photo", 3), ("colour is different", 2), ("color is different", 2),
        ("looks different", 2), ("description", 1.5), ("picture", 1), ("photos", 0.5),
    ],
    "fit.size": [
        ("勒", 2), ("挤脚", 3), ("短了", 2), ("太长", 2), ("太宽", 2), ("戴不进", 2.5),
        ("尺码", 2.5), ("偏小", 2.5), ("偏大", 2.5), ("太小", 2), ("太大", 2), ("穿不上", 2.5), ("穿不下", 2.5), ("码数", 2.5),
        ("不合身", 2.5), ("大了", 1.5), ("小了", 1.5), ("太紧", 2), ("太松", 2), ("尺寸", 1.5),
        ("换大一码", 3), ("换小一码", 3), ("换个码", 3),
        ("size", 2.5), ("too small", 2.5), ("too big", 2.5), ("too large", 2.5), ("too tight", 2.5), ("too loose", 2.5),
        ("doesn't fit", 2.5), ("does not fit", 2.5), ("runs small", 3), ("runs large", 3), ("smaller size", 3), ("bigger size", 3),
    ],
    "fulfillment.missing_item": [
        ("只有一", 2), ("只到了", 2), ("一个都没有", 2.5), ("都没有", 1.5), ("只有五个", 2.5),
        ("少发", 3), ("漏发", 3), ("少了一个", 3), ("少一个", 2.5), ("少了", 1.5), ("只收到一个", 2.5), ("只收到", 1.5),
        ("没收到赠品", 2.5), ("赠品没", 2.5), ("缺少", 2), ("缺了", 2), ("配件没有", 2.5), ("少件", 3), ("没有发", 1.5), ("数量不对", 2.5),
        ("missing", 3), ("only received one", 3), ("only got", 2), ("one short", 3), ("not included", 2), ("free gift", 1.5),
        ("didn't receive the gift", 3), ("part missing", 3), ("missing part", 3),
    ],
    "fulfillment.wrong_item": [
        ("发来的是", 2.5), ("寄来的是", 2.5), ("我拍的是", 2.5), ("发成", 2.5), ("sent me", 2), ("someone else's", 2.5), ("isn't what i bought", 3),
        ("发错", 3), ("错发", 3), ("发成了", 3), ("不是我买的", 3), ("不是我下单的", 3), ("颜色发错", 3), ("型号不对", 2.5),
        ("款式发错", 3), ("收到的是", 1.5), ("给我发了", 1.5), ("寄错", 3),
        ("wrong item", 3), ("wrong colour", 3), ("wrong color", 3), ("wrong size was sent", 3), ("sent the wrong", 3),
        ("not what i ordered", 3), ("different item", 2.5), ("wrong model", 3),
    ],
    "quality.damaged": [
        ("碎", 2.5), ("裂痕", 2.5), ("磕碰", 2.5), ("打开就是", 2), ("到的时候就", 2), ("开箱就", 2),
        ("破损", 3), ("破了", 3), ("碎了", 3), ("摔坏", 3), ("压坏", 3), ("压扁", 2.5), ("漏了", 2.5), ("漏液", 3), ("洒了", 2.5),
        ("裂了", 2.5), ("裂开", 2.5), ("包装烂", 3), ("外包装破", 3), ("变形", 2), ("瘪了", 2.5), ("磕坏", 3), ("收到就坏", 2.5),
        ("damaged", 3), ("broken in transit", 3), ("arrived broken", 3), ("cracked", 2.5), ("crushed", 3), ("leaking", 3),
        ("leaked", 3), ("smashed", 3), ("dented", 2.5), ("box was torn", 3), ("shattered", 3),
    ],
    "quality.defect": [
        ("一股味", 2.5), ("熏", 2), ("漏水", 3), ("broke", 2.5), ("came apart", 3), ("bleeds", 2.5), ("doesn't turn on", 3),
        ("质量问题", 3), ("质量差", 3), ("质量不好", 3), ("坏了", 2), ("用不了", 2.5), ("不能用", 2.5), ("开线", 3), ("掉色", 3),
        ("起球", 3), ("断了", 2), ("脱胶", 3), ("有异味", 2.5), ("异味", 2), ("过敏", 2.5), ("烂脸", 3), ("不出水", 3), ("充不进电", 3),
        ("开不了机", 3), ("没反应", 2), ("掉漆", 3), ("卡扣坏", 3), ("拉链坏", 3), ("漏电", 3), ("保温效果", 2), ("不保温", 3),
        ("毛病", 1.5), ("瑕疵", 2.5), ("做工差", 3), ("线头", 2), ("发霉", 3), ("变质", 3), ("过期", 2.5), ("有虫", 3),
        ("defect", 3), ("defective", 3), ("stopped working", 3), ("doesn't work", 3), ("does not work", 3), ("poor quality", 3),
        ("bad quality", 3), ("faulty", 3), ("rash", 2.5), ("allergic", 2.5), ("won't charge", 3), ("won't turn on", 3),
        ("falling apart", 3), ("peeling", 2.5), ("smells", 2), ("expired", 2.5), ("mould", 3), ("mold", 3), ("pilling", 3),
    ],
    "quality.counterfeit_suspected": [
        ("正品", 2), ("原厂", 2), ("authentic", 2.5), ("authenticity", 3), ("serial number", 2),
        ("假货", 3), ("假的", 2.5), ("仿品", 3), ("高仿", 3), ("不是正品", 3), ("非正品", 3), ("正品吗", 2), ("专柜验", 3), ("防伪", 2.5),
        ("山寨", 3), ("a货", 3), ("鉴定", 2),
        ("fake", 3), ("counterfeit", 3), ("not genuine", 3), ("not authentic", 3), ("knock-off", 3), ("knockoff", 3), ("replica", 3),
    ],
    "preference.style": [
        ("不太喜欢", 2.5),
        ("不喜欢", 2.5), ("款式", 2), ("不好看", 2.5), ("颜色不喜欢", 3), ("不适合我", 2.5), ("上身效果", 2), ("显胖", 2.5),
        ("显老", 2.5), ("丑", 2), ("风格", 1.5), ("版型", 1.5),
        ("don't like", 2.5), ("do not like", 2.5), ("not my style", 3), ("ugly", 2), ("looks cheap", 2), ("style", 1.5),
        ("doesn't suit me", 3), ("does not suit me", 3), ("unflattering", 3),
    ],
    "preference.changed_mind": [
        ("不需要", 3), ("拍多了", 3), ("买重复", 3), ("后悔", 2.5), ("用不到", 2), ("用不着", 2),
        ("不想要了", 3), ("不要了", 2.5), ("七天无理由", 3), ("7天无理由", 3), ("无理由", 2.5), ("拍错了", 2.5), ("买多了", 2.5),
        ("多拍了", 3), ("重复下单", 3), ("冲动", 2), ("用不上", 2), ("家里有了", 2.5), ("买重了", 3), ("改主意", 3),
        ("changed my mind", 3), ("no longer need", 3), ("don't need", 2.5), ("do not need", 2.5), ("ordered by mistake", 3),
        ("ordered twice", 3), ("duplicate order", 3), ("no reason", 2), ("impulse", 2),
    ],
    "price.promo_dispute": [
        ("到手", 2.5), ("付了", 1), ("原价", 2.5), ("红包", 2.5), ("没抵扣", 3), ("没减", 2.5), ("半价", 2.5), ("秒杀", 2), ("便宜", 1.5), ("charged", 2), ("half off", 2.5),
        ("降价", 3), ("价格", 1.5), ("差价", 3), ("优惠券", 3), ("券没用上", 3), ("满减", 3), ("比直播间贵", 3), ("便宜了", 2.5),
        ("保价", 3), ("价保", 3), ("买贵了", 3), ("赠品承诺", 2), ("活动价", 2.5), ("没有优惠", 2.5), ("返现", 2.5),
        ("price dropped", 3), ("cheaper", 2.5), ("coupon", 3), ("discount", 2.5), ("price difference", 3), ("overcharged", 3),
        ("promo", 2.5), ("promotion", 2.5), ("price protection", 3),
    ],
    "logistics.delay": [
        ("揽收", 2.5), ("不动了", 2.5), ("什么时候到", 2.5), ("运输中", 1.5), ("hasn't shipped", 3), ("taking forever", 3), ("where is my package", 3),
        ("物流慢", 3), ("物流太慢", 3), ("太慢", 1.5), ("还没到", 2.5), ("迟迟", 2), ("一直不发货", 3), ("不发货", 2.5), ("没发货", 2.5),
        ("几天了", 1.5), ("催", 1.5), ("延迟", 2.5), ("快递慢", 3), ("好久", 1), ("还没发", 2.5), ("物流不动", 3), ("没更新", 2),
        ("late", 2), ("delayed", 3), ("still not arrived", 3), ("hasn't arrived", 3), ("has not arrived", 3), ("slow delivery", 3),
        ("not shipped", 3), ("still waiting", 2), ("tracking hasn't updated", 3), ("too slow", 2),
    ],
    "logistics.lost": [
        ("显示签收", 2.5), ("派送成功", 2), ("没拿到", 2), ("不见了", 2.5), ("never got", 3), ("marked as delivered", 3), ("遗失", 3),
        ("丢件", 3), ("丢了", 2.5), ("丢失", 3), ("没收到货", 3), ("没收到", 2), ("显示签收但", 3), ("显示已签收", 2.5), ("未收到", 2.5),
        ("被人拿走", 3), ("快递柜没有", 3), ("找不到包裹", 3), ("包裹不见", 3),
        ("lost", 3), ("never arrived", 3), ("never received", 3), ("marked as delivered but", 3), ("not received", 2.5),
        ("package is missing", 3), ("parcel is missing", 3), ("stolen", 2.5),
    ],
}

FALLBACK = "other"
_WORDS = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Suggestion:
    category: str
    confidence: float
    terms: tuple[str, ...]
    scores: dict[str, float]


def suggest(text: str, extra: dict[str, list[tuple[str, float]]] | None = None) -> Suggestion:
    """The most likely category for a complaint, with its confidence and the phrases that drove it."""
    lowered = (text or "").lower()
    padded = " " + " ".join(_WORDS.findall(lowered)) + " "
    scores: dict[str, float] = {}
    hits: dict[str, list[str]] = {}
    # A phrase can only match where its first two characters occur: only the phrases whose start
    # is in the text are tried, not all ~400 for every complaint (bench F5, F29).
    present = set(lowered)
    present.update(lowered[i:i + 2] for i in range(len(lowered) - 1))
    for category, phrase, weight in _lexicon(extra).candidates(present):
        if _matches(phrase, lowered, padded):
            scores[category] = scores.get(category, 0.0) + weight
            hits.setdefault(category, []).append(phrase)
    if not scores:
        return Suggestion(FALLBACK, 0.0, (), {})
    best = max(scores, key=lambda c: (scores[c], -len(hits[c])))
    total = sum(scores.values())
    # Confidence: the winner's share of the evidence, damped when the evidence is thin.
    strength = min(scores[best] / 3.0, 1.0)
    confidence = round(scores[best] / total * strength, 3)
    return Suggestion(best, confidence, tuple(hits[best]), {k: round(v, 2) for k, v in scores.items()})


# "不是质量问题" / "not damaged": a negated phrase is evidence against, not for.
_NEGATIONS_ZH = ("不是", "没有", "并非", "并不", "没")
_NEGATIONS_EN = ("not ", "no ", "isn't ", "wasn't ", "never ")


def _matches(phrase: str, lowered: str, padded: str) -> bool:
    if phrase.isascii():
        # English phrases match on word boundaries, or as a multi-word phrase anywhere.
        at = padded.find(f" {phrase} ")
        if at < 0:
            at = lowered.find(phrase) if " " in phrase else -1
            before = lowered[max(at - 8, 0):at] if at >= 0 else ""
        else:
            before = padded[max(at - 7, 0):at + 1]
        return at >= 0 and not (phrase not in ("never arrived", "never received", "never got") and before.endswith(_NEGATIONS_EN))
    start = lowered.find(phrase)
    while start >= 0:
        if not lowered[max(start - 2, 0):start].endswith(_NEGATIONS_ZH) or phrase.startswith(("不", "没")):
            return True
        start = lowered.find(phrase, start + 1)
    return False


def _with_keys(phrases: dict[str, list[tuple[str, float]]]) -> list[tuple[str, str, float, str | None]]:
    """(category, phrase, weight, the two characters any match starts with, or None to always try)."""
    return [(category, phrase, weight, _key(phrase)) for category, listed in phrases.items() for phrase, weight in listed]


def _key(phrase: str) -> str | None:
    # An English phrase matches word by word in the text, so its start is in the text only when
    # that start is made of word characters.
    if phrase.isascii() and not phrase[:2].replace("'", "a").isalnum():
        return None
    return phrase[:2]


class _Keyed:
    """The phrases by the two characters a match starts with, to try only those a text can match."""

    def __init__(self, flat: list[tuple[str, str, float, str | None]]) -> None:
        self.flat = [(category, phrase, weight) for category, phrase, weight, _ in flat]
        self.always = [i for i, (*_, key) in enumerate(flat) if key is None]
        self.by_key: dict[str, list[int]] = {}
        for i, (*_, key) in enumerate(flat):
            if key is not None:
                self.by_key.setdefault(key, []).append(i)

    def candidates(self, present: set[str]) -> list[tuple[str, str, float]]:
        """The phrases whose start is in `present`, in lexicon order (which decides ties)."""
        found = list(self.always)
        for key in present.intersection(self.by_key):
            found.extend(self.by_key[key])
        found.sort()
        return [self.flat[i] for i in found]


_LEXICON_KEYED = _Keyed(_with_keys(LEXICON))


def _lexicon(extra: dict[str, list[tuple[str, float]]] | None) -> _Keyed:
    return _Keyed(_with_keys(_merged(extra))) if extra else _LEXICON_KEYED


def _merged(extra: dict[str, list[tuple[str, float]]] | None) -> dict[str, list[tuple[str, float]]]:
    if not extra:
        return LEXICON
    merged = {k: list(v) for k, v in LEXICON.items()}
    for category, phrases in extra.items():
        merged.setdefault(category, []).extend(phrases)
    return merged
