"""The stand-in's "translation" writes each language in its own script, as a real model does.

The stand-in cannot translate; it keeps the English's shape (tags, digits, punctuation) and
replaces every Latin letter outside tags and entities by a letter of the language's script, so
a Russian text is Cyrillic and a Telugu one Telugu, and LotLens' language check sees what it
would see from the real API. Names go into the script too (`BMW` → `БМЦ`), where
a real model keeps them in Latin: LotLens' check, which leaves such names out of its count, is
tested on texts of its own (tests/unit/test_language_check.py); keeping them here cost a
regular expression per word, more than the rest of the stand-in's work on a request.

Which script: the one a tag names (`sr-Latn`, `zh-Hant`, `pa-Guru`), else the language's
likely script in CLDR (likelySubtags, language alone: `te` → Telu, `am` → Ethi), written
down here on their own rather than taken from LotLens' code, so that a mistake there shows.
Ladino (CLDR: Hebrew) is written in Latin, as it mostly is today; so are other languages and
regions (`az-IR` stays Latin: a model asked for it may well answer so).

Each script's letters are a run of its letters in Unicode's Scripts.txt, 26 of them spread over
the run (repeated when it is shorter): a generic alphabet, enough for any script LotLens checks.
Chinese is the exception: a run of Han characters mixes Simplified and Traditional forms, and a
`zh-TW` text must be in Traditional ones, a `zh` text in Simplified ones, so each system has an
alphabet of its own (`_CHINESE_ALPHABETS`).
"""

from __future__ import annotations

import codecs
import re
from functools import cache, lru_cache

# A run of each script's letters in Scripts.txt (first, last code point), all of them letters.
_LETTER_RUNS = {
    "Cyrl": (0x0430, 0x044F), "Grek": (0x03B1, 0x03C9), "Armn": (0x0561, 0x0586),
    "Hebr": (0x05D0, 0x05EA), "Arab": (0x0628, 0x063A), "Thaa": (0x0780, 0x07A5),
    "Deva": (0x0915, 0x0939), "Beng": (0x0995, 0x09A8), "Guru": (0x0A15, 0x0A28),
    "Gujr": (0x0A95, 0x0AA8), "Orya": (0x0B15, 0x0B28), "Taml": (0x0BAE, 0x0BB9),
    "Telu": (0x0C15, 0x0C28), "Knda": (0x0C95, 0x0CA8), "Mlym": (0x0D15, 0x0D28),
    "Sinh": (0x0D9A, 0x0DB1), "Thai": (0x0E01, 0x0E2E), "Laoo": (0x0E94, 0x0EA3),
    "Tibt": (0x0F49, 0x0F6C), "Mymr": (0x1000, 0x102A), "Geor": (0x10D0, 0x10FA),
    "Ethi": (0x1200, 0x1248), "Khmr": (0x1780, 0x17A2), "Hang": (0xAC00, 0xD7A3),
    "Hira": (0x3042, 0x3093), "Kana": (0x30A2, 0x30F3), "Hani": (0x4E00, 0x9FFF),
}
# 26 pairs from the General List of Simplified Chinese Characters (简化字总表, 1986), each
# Simplified form beside its Traditional one as Taiwan prints it (爱/愛 ... 业/業): Simplified
# Chinese is written in the first, Traditional in the second.
_CHINESE_PAIRS = ("爱愛 备備 笔筆 边邊 长長 车車 东東 动動 对對 风風 国國 过過 会會 见見 进進 来來 "
                  "马馬 门門 鸟鳥 气氣 时時 书書 为為 问問 学學 业業 ")
_CHINESE_ALPHABETS = {"Hans": _CHINESE_PAIRS[0::3], "Hant": _CHINESE_PAIRS[1::3]}
_OTHER_SYSTEM = {"Hans": "Hant", "Hant": "Hans"}
# ISO 15924 codes for combinations, written in one of their parts (Japanese in hiragana).
_WRITTEN_IN = {"Jpan": "Hira", "Kore": "Hang"}
# CLDR likelySubtags' script of each language (alone) whose likely script is one of the above.
_LANGUAGES_BY_SCRIPT = {
    "Cyrl": ("ab abq ady alt av ba be bg bua bxr ce chm crh cu cv dar inh kaa kbd khk kk koi "
             "kpv krc kum kv ky lbe lez mdf mhr mk mn mrj myv os ru rue sah sr tg tt tyv udm "
             "uk"),
    "Grek": "bgx el pnt tsd",
    "Armn": "hy",
    "Hebr": "he iw ji ydd yi",
    "Arab": ("aeb apc apd ar arb arq ars ary arz avl bal bcc bej bft bgn bqi brh cja ckb dcc "
             "dgl fa fia fub gbz gjk gju glk gwc gwt haz hnd hno kby khw ks kvx kxp kzh lah "
             "lki lrc luz mde mfa mki mvy mzn oru ota pbu pes phl pnb prd ps rmt scl sd sdh "
             "shu skr swb trw ug ur wni zdj"),
    "Thaa": "dv",
    "Deva": ("awa bap bfy bgc bh bhb bhi bho bjj bra brx btv dgo dhd doi dty gbm ggn gom gvr "
             "hi him hne hoc hoj jml kfr kfy khn knn kok kru kxl lif mag mai mgp mr mrd mtr "
             "mup mwr ne new noe npi ppa raj rjs sa sck srx swv taj tdg tdh thl thq thr tkt "
             "tsf wbr wtm xnr xsr"),
    "Beng": "as bn bpy grt mni rkt syl unr unx",
    "Guru": "pa",
    "Gujr": "gu",
    "Orya": "or ory",
    "Taml": "bfq ta",
    "Telu": "gno gon lmn te wbq",
    "Knda": "kn tcy",
    "Mlym": "ml",
    "Sinh": "si",
    "Thai": "kdt kxm lcp lwl sou th tts",
    "Laoo": "kjg lo",
    "Tibt": "adp bo dz tsj",
    "Mymr": "kht mnw my shn",
    "Geor": "ka xmf",
    "Ethi": "am bcq bji bst byn drs gez gmv gof hdy kqy ktb kxc mdx mym sgw ti tig wal",
    "Khmr": "km",
    "Kana": "ryu",
    "Jpan": "ja",
    "Kore": "ko",
    "Hans": "cmn gan hak hsn lzh nan wuu zh",
    "Hant": "yue",
}
# CLDR likelySubtags where a region changes the script of Chinese: zh (and cmn) in Taiwan, Hong
# Kong, Macao and the places CLDR sees Traditional in use (zh_US → zh_Hant_US), yue in China.
_REGION_SCRIPTS = {
    **{(language, region): "Hant" for language in ("zh", "cmn")
       for region in ("AU", "BN", "GB", "GF", "HK", "ID", "MO", "PA", "PF", "PH", "SR", "TH", "TW", "US",
                      "VN")},
    ("yue", "CN"): "Hans",
}
_LANGUAGE_SCRIPTS = {language: script for script, languages in _LANGUAGES_BY_SCRIPT.items()
                     for language in languages.split()}
# What stays as it is: tags and entities.
_MARKUP = re.compile(r"(<[^>]*>|&#?\w+;)")
# Its tags alone, kept by a split (a text without entities).
_TAG = re.compile(r"(<[^>]*>)")


# Asked for each language of each answer; the tags come from requests, so the cache is bounded.
@lru_cache(maxsize=1024)
def script_of(tag: str) -> str | None:
    """The script the stand-in writes a language in; None for Latin (left as it is)."""
    subtags = tag.split("-")
    language = subtags[0].lower()
    named = next((part.title() for part in subtags[1:] if len(part) == 4 and part.isalpha()), None)
    region = next((part.upper() for part in subtags[1:] if len(part) == 2 and part.isalpha()), None)
    script = named or _REGION_SCRIPTS.get((language, region or "")) or _LANGUAGE_SCRIPTS.get(language)
    script = _WRITTEN_IN.get(script or "", script)
    return script if script in _LETTER_RUNS or script in _CHINESE_ALPHABETS else None


def in_script(tag: str, text: str, other_variant: bool = False) -> str:
    """`text` with its Latin letters outside tags and entities in the language's script
    (`other_variant`: a Chinese language in the other system's forms, the fault of that name)."""
    script = script_of(tag)
    if script is None:
        return text
    if other_variant:
        script = _OTHER_SYSTEM.get(script, script)
    if "<" not in text and "&" not in text:
        return _written_in(script, text)  # no markup to keep: what the split below comes to, sooner
    decoding = _charmap(script)
    if decoding is not None and "&" not in text and text.isascii():
        # Written whole, one character for one, then its tags (at the same places: `<` and `>` are
        # no letters) put back as they were: a 1.2 kB description's 20 pieces written one by one
        # took 14 us of a 42 us translation line, through a split that looked for entities too.
        written = _TAG.split(codecs.charmap_decode(text.encode("ascii"), "strict", decoding)[0])
        written[1::2] = _TAG.findall(text)
        return "".join(written)
    pieces = _MARKUP.split(text)
    # The split alternates text to write in the script and markup.
    pieces[::2] = [_written_in(script, piece) for piece in pieces[::2]]
    return "".join(pieces)


def _written_in(script: str, text: str) -> str:
    # An ASCII text is decoded through the table as a charmap, in C: 0.2 against 1.4 us for a
    # 60-character one by str.translate, which makes a str of each letter's for the text it writes.
    decoding = _charmap(script)
    if decoding is not None and text.isascii():
        return codecs.charmap_decode(text.encode("ascii"), "strict", decoding)[0]
    return text.translate(_latin_to(script))


def alphabet(script: str) -> str:
    """The 26 letters that stand for a, b, c, ... in `script`."""
    if script in _CHINESE_ALPHABETS:
        return _CHINESE_ALPHABETS[script]
    first, last = _LETTER_RUNS[script]
    span = last - first + 1
    step = max(1, span // 26)
    return "".join(chr(first + (n * step) % span) for n in range(26))


@cache
def _latin_to(script: str) -> tuple[str, ...]:
    """a-z and A-Z → the script's letters (capitals where it has them), as a `str.translate` table:
    a callback per letter, or per word, took 150 or 35 µs for one answer, about as much as the
    rest of the stand-in's work on a request. Every Latin-1 character has its entry (the others
    as they are): with the 52 letters alone, each other character was a failed lookup, 1.8 against
    1.2 µs for a 64-character text. Characters past the table are left as they are the same way."""
    table = [chr(code) for code in range(256)]
    for offset, letter in enumerate(alphabet(script)):
        table[ord("a") + offset] = letter
        table[ord("A") + offset] = letter.upper()
    return tuple(table)


@cache
def _charmap(script: str) -> str | None:
    """`_latin_to` as a charmap decoding table, when each letter of the script is one character (an
    upper case may be two: Armenian `և` is `ԵՒ`)."""
    table = _latin_to(script)
    return "".join(table) if all(len(letter) == 1 for letter in table) else None
