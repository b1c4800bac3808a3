"""Whether a Chinese text is written in the forms its tag asks for: Simplified or Traditional.

The script check (`scripts.py`) sees one script, Han, in both: a `zh-TW` translation written in
Simplified characters was stored as Traditional Chinese, and a Taiwanese or Hong Kong marketplace
showed its buyers the other writing system. This check counts the characters whose two forms
differ (`_PAIRS`): a text asked for in one system whose such characters are mostly of the other
fails, once there are `MIN_VARIANT_MARKS` of them to judge by.

Source of the table: the pairs of the General List of Simplified Chinese Characters (简化字总表,
1986; carried into the Table of General Standard Chinese Characters, 2013) with their
Traditional forms as Taiwan and Hong Kong print them (為/爲, 說/説, 線/綫, 啟/啓: either counts).
Picked: the about 250 most frequent in running Chinese text (jieba's dictionary of word
frequencies, summed per character) and some 70 of car damage (锈/鏽, 毂/轂, 挡/擋). Each pair was
checked against OpenCC's tables (STCharacters, TSCharacters, TWVariants, HKVariants) to be
exclusive: the Simplified form never written in Traditional text, nor a Traditional form in
Simplified text. Left out: pairs whose Traditional form Simplified text also writes (干/乾,
于/於, 着/著, 征/徵). `_SHARED_SIMPLIFIED` holds pairs whose Simplified form Traditional text
also writes (后 "empress", 里 "li", 划 "to row", 确 and 坏 as old variants; 税, 脱, 户 as Hong
Kong prints them): only their Traditional form counts (後, 裡, 劃, 確, 壞, 稅).
"""

from __future__ import annotations

import re
from functools import lru_cache

import langcodes

# Each word: a Simplified form, then its Traditional form(s).
_PAIRS = (
    "国國 为爲為 这這 个個 来來 会會 时時 学學 说說説 们們 发發髮 对對 长長 过過 业業 经經 门門 动動 "
    "进進 区區 开開 产產 军軍 还還 现現 机機 体體 与與 当當 两兩 实實 关關 从從 内內 没沒 将將 员員 东東 "
    "头頭 间間 无無 见見 战戰 点點 场場 数數 样樣 问問 并並併 级級 应應 资資 务務 气氣 汉漢 总總 电電 "
    "声聲 设設 义義 统統 处處 马馬 儿兒 领領 队隊 计計 别別彆 权權 话話 报報 给給 变變 书書 华華 议議 "
    "称稱 决決 张張 导導 术術 结結 师師 达達 题題 条條 规規 县縣 风風 运運 组組 听聽 济濟 论論 强強 黄黃 "
    "记記 号號 类類 传傳 带帶 边邊 难難 历歷曆 认認 车車 线線綫 备備 调調 转轉 该該 让讓 较較 单單 约約 "
    "则則 属屬 图圖 观觀 构構 随隨 热熱 网網 铁鐵 断斷 况況 证證 双雙 标標 项項 响響 轻輕 击擊 请請 离離 "
    "显顯 视視 护護 虽雖 费費 试試 识識 维維 环環 严嚴 态態 层層 续續 状狀 钱錢 细細 弹彈 检檢 验驗 紧緊 "
    "优優 伤傷 亿億 压壓 预預 继繼 乱亂 块塊 额額 测測 换換 买買 险險 评評 吗嗎 遗遺 顶頂 录錄 脑腦 齐齊 "
    "盘盤 卖賣 减減 侧側 补補 旧舊 轮輪 宽寬 烧燒 烟煙菸 横橫 灯燈 丝絲 购購 纵縱 仪儀 盖蓋 钢鋼 码碼 "
    "损損 频頻 签籤簽 废廢 贴貼 残殘 镜鏡 缘緣 启啓啟 净淨 龄齡 湿溼濕 颜顏 悬懸 摄攝 辆輛 饰飾 滚滾 "
    "驾駕 详詳 锁鎖 胶膠 脏髒臟 弯彎 挡擋 尘塵 纹紋 齿齒 偿償 轴軸 雾霧 丢丟 洁潔 链鏈 剥剝 缝縫 绳繩 "
    "遥遙 阀閥 驶駛 舱艙 赔賠 蚀蝕 钉釘 钩鉤鈎 铝鋁 垫墊 缆纜 钥鑰 栅柵 槛檻 锈鏽銹 渍漬 剐剮 毂轂 钣鈑 "
    "众眾衆 卫衛衞 宝寶 驰馳 凯凱 尔爾 铆鉚 阶階 剂劑"
)
# Each word: a Simplified form that Traditional text also uses, then its Traditional form(s).
_SHARED_SIMPLIFIED = (
    "后後 里裏裡 面麪麵 种種 表錶 么麼 只隻 制製 万萬 回迴 系係繫 几幾 布佈 党黨 据據 台臺檯颱 价價 划劃 "
    "确確 户戶 板闆 叶葉 厂廠 脱脫 坏壞 梁樑 税稅 挂掛 涂塗 刮颳 杠槓 丰豐"
)
# The fewest differing characters a verdict takes: about one sentence of a description (in the
# tests' car-damage sentences a third to a half of the Han characters differ, so 8 come in 15 to
# 25 of them). Fewer say too little: a name quoted in the other system (东风日产: 3 of them) must
# not outvote the few characters around it.
MIN_VARIANT_MARKS = 8
SYSTEM_NAMES = {"Hans": "Simplified", "Hant": "Traditional"}
# The Chinese languages judged without a script in the tag. CLDR's likely script for the other
# Sinitic languages is Simplified everywhere (`nan-TW`, `hak-TW` too), though Taiwanese
# Hokkien and Hakka are written in Traditional characters; they are judged when the tag names it.
_JUDGED_LANGUAGES = frozenset({"zh", "cmn", "yue"})
# Where one system is the written standard (CLDR territoryInfo: zh_Hant official in TW, HK, MO;
# zh_Hans in CN, SG and taught in MY) the tag's CLDR likely script is expected: Traditional for
# `yue-SG`, Simplified for `zh-SG`. Chinese elsewhere (`zh-US`, `zh-CA`, `zh-419`) is written
# both ways and not judged, as `scripts.expected_script` does for `az-IR`.
_STANDARD_IN = frozenset({"TW", "HK", "MO", "CN", "SG", "MY"})


def _forms(table: str) -> tuple[str, str]:
    """(Simplified forms, Traditional forms) of a table's words."""
    words = table.split()
    return "".join(word[0] for word in words), "".join(word[1:] for word in words)


_SIMPLIFIED, _TRADITIONAL = _forms(_PAIRS)
_TRADITIONAL += _forms(_SHARED_SIMPLIFIED)[1]
_MARKS = {"Hans": re.compile(f"[{_SIMPLIFIED}]"), "Hant": re.compile(f"[{_TRADITIONAL}]")}


@lru_cache(maxsize=4096)
def expected_variant(tag: str) -> str | None:
    """`Hans` or `Hant`: the forms a text in this (canonical) tag must be written in; None when
    not judged (not Chinese, or a region where both are in use)."""
    language = langcodes.Language.get(tag, normalize=False)
    if language.script is not None:
        # Named, it is judged for a Chinese language only: `ja-Hant` is Japanese in old forms,
        # whose 国 and 会 are not Simplified Chinese.
        chinese = langcodes.Language.make(language=language.language).maximize().script in SYSTEM_NAMES
        return language.script if chinese and language.script in SYSTEM_NAMES else None
    if language.language not in _JUDGED_LANGUAGES:
        return None
    if language.territory is None:
        return langcodes.Language.make(language=language.language).maximize().script
    return language.maximize().script if language.territory in _STANDARD_IN else None


def count_forms(text: str, variant: str) -> int:
    """How many characters of `text` are forms only `variant` (`Hans`, `Hant`) writes."""
    # findall: 2 µs over 1 KB of Chinese without a match, where sub("") took 6.
    return len(_MARKS[variant].findall(text))


def variant_problem(text: str, variant: str) -> str | None:
    """Why `text` is not in `variant`'s forms, or None when most of its differing characters are
    (or too few differ to tell)."""
    other = "Hant" if variant == "Hans" else "Hans"
    wrong = count_forms(text, other)
    if wrong * 2 <= MIN_VARIANT_MARKS:
        return None  # never a majority of enough: a right text is done with one count
    right = count_forms(text, variant)
    if wrong + right < MIN_VARIANT_MARKS or wrong <= right:
        return None
    return (f"{SYSTEM_NAMES[other]} characters, {SYSTEM_NAMES[variant]} asked for "
            f"({wrong} of {wrong + right} that differ)")
