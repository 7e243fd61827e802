"""A realistic, deterministic live-commerce data set: `aftersales demo`.

Everything is planned first, in memory, from one `random.Random(seed)` and one anchor "now" (the
current hour unless given), so the same seed and anchor give the same data. Orders, outbound
parcels and their scans are then written in bulk (rows shaped exactly as OrderService writes
them), and every ticket is played through the real services — TicketService.open_ticket (where
the published auto-approval policy decides), TicketService.act, and carrier pushes through
OrderService.ingest_tracking with TicketService.apply_carrier_delivery — with a FrozenClock set
to each step's own time, so timelines, state-entry timestamps and SLA figures look like a real
60 days of work.

Planted signal for the feedback analytics: two products (a 美妆 serum and a 母婴 vacuum cup) with
a much higher quality.defect rate, and two live sessions whose host over-promised
(description.host_claim_mismatch).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from aftersales.auth.principal import Principal
from aftersales.clock import FrozenClock, ensure_utc, utcnow
from aftersales.settings import Settings
from aftersales.tickets import workflow

DAYS = 60
BATCH = 100
# Tickets requested in the last RECENT_DAYS (at least RECENT_MIN of them) are opened first and
# played afterwards, so that every status a ticket can rest in is sure to appear among them.
RECENT_DAYS = 10
RECENT_MIN = 40
BACKLOG = 0.15
SHOP = "鹿鸣优选旗舰店"
WAREHOUSE = "杭州市"
ROLES = ("integration", "agent", "supervisor", "product", "admin")

PLATFORM = Principal(kind="token", id=None, name="douyin-open-platform", role="integration")
FINANCE = Principal(kind="token", id=None, name="finance-erp", role="integration")
AGENTS = tuple(Principal(kind="user", id=None, name=f"demo-agent-{i}", role="agent") for i in range(1, 5))
WAREHOUSE_AGENT = Principal(kind="user", id=None, name="demo-warehouse-1", role="agent")

# -- catalogue ------------------------------------------------------------------------------

# category -> [(product id, name, [(variant, price)], popularity, sized)]
CATALOGUE: dict[str, list[tuple[str, str, list[tuple[str, str]], float, bool]]] = {
    "美妆": [
        ("P-MZ-01", "丝绒哑光口红", [("#01正红", "89.00"), ("#02豆沙", "89.00"), ("#03枫叶棕", "89.00")], 3, False),
        ("P-MZ-02", "玻尿酸补水精华液", [("30ml", "159.00"), ("50ml", "239.00")], 3, False),
        ("P-MZ-03", "氨基酸洁面乳", [("120g", "59.00")], 2, False),
        ("P-MZ-04", "轻薄气垫BB霜", [("01自然色", "129.00"), ("02象牙白", "129.00")], 2, False),
        ("P-MZ-05", "清透防晒喷雾SPF50+", [("150ml", "79.00")], 1.5, False),
        ("P-MZ-06", "纤长卷翘睫毛膏", [("黑色", "69.00")], 1, False),
        ("P-MZ-07", "温和卸妆水", [("500ml", "49.90")], 1.5, False),
        ("P-MZ-08", "烟酰胺美白面膜", [("10片装", "99.00"), ("20片装", "179.00")], 2, False),
    ],
    "母婴": [
        ("P-MY-01", "超薄透气纸尿裤", [("S码", "139.00"), ("M码", "139.00"), ("L码", "139.00"), ("XL码", "149.00")], 3, True),
        ("P-MY-02", "有机宝宝米粉", [("原味", "68.00"), ("高铁", "72.00")], 1.5, False),
        ("P-MY-03", "婴儿手口湿巾80抽×10包", [("10包", "49.90")], 2, False),
        ("P-MY-04", "儿童316不锈钢保温杯", [("恐龙绿", "129.00"), ("独角兽粉", "129.00")], 3, False),
        ("P-MY-05", "纯棉婴儿连体衣", [("66cm", "79.00"), ("73cm", "79.00"), ("80cm", "85.00"), ("90cm", "85.00")], 2, True),
        ("P-MY-06", "防胀气玻璃奶瓶", [("160ml", "89.00"), ("240ml", "99.00")], 1.5, False),
        ("P-MY-07", "轻便可折叠婴儿推车", [("星空灰", "1299.00")], 0.5, False),
        ("P-MY-08", "儿童软毛牙刷4支装", [("4支装", "29.90")], 1.5, False),
    ],
    "服饰": [
        ("P-FS-01", "纯棉宽松短袖T恤", [("白色M", "59.00"), ("白色L", "59.00"), ("黑色M", "59.00"), ("黑色L", "59.00"), ("黑色XL", "59.00")], 3, True),
        ("P-FS-02", "高腰显瘦阔腿牛仔裤", [("S", "139.00"), ("M", "139.00"), ("L", "139.00"), ("XL", "139.00")], 2.5, True),
        ("P-FS-03", "羊毛混纺针织开衫", [("燕麦色M", "229.00"), ("燕麦色L", "229.00"), ("黑色M", "229.00")], 2, True),
        ("P-FS-04", "轻薄白鸭绒羽绒服", [("M", "399.00"), ("L", "399.00"), ("XL", "429.00")], 1.5, True),
        ("P-FS-05", "冰丝睡衣套装", [("M", "119.00"), ("L", "119.00")], 1.5, True),
        ("P-FS-06", "加绒连帽卫衣", [("灰色M", "159.00"), ("灰色L", "159.00"), ("藏青L", "159.00")], 2, True),
        ("P-FS-07", "百褶半身裙", [("S", "99.00"), ("M", "99.00")], 1.5, True),
        ("P-FS-08", "男士免烫商务衬衫", [("39", "169.00"), ("40", "169.00"), ("41", "169.00"), ("42", "169.00")], 1, True),
    ],
    "食品": [
        ("P-SP-01", "每日坚果30袋礼盒", [("30袋", "99.00")], 3, False),
        ("P-SP-02", "内蒙古手撕风干牛肉500g", [("原味", "128.00"), ("香辣", "128.00")], 2, False),
        ("P-SP-03", "柳州螺蛳粉5袋装", [("5袋", "39.90")], 3, False),
        ("P-SP-04", "低糖即食燕麦片1kg", [("1kg", "35.90")], 2, False),
        ("P-SP-05", "云南鲜花饼10枚", [("玫瑰", "45.00")], 1.5, False),
        ("P-SP-06", "冻干黑咖啡24颗", [("24颗", "69.00")], 2, False),
        ("P-SP-07", "智利车厘子JJ级2斤", [("2斤", "139.00")], 1, False),
        ("P-SP-08", "东北五常大米5kg", [("5kg", "79.90")], 1.5, False),
    ],
    "家居": [
        ("P-JJ-01", "全棉磨毛四件套", [("1.5m床", "299.00"), ("1.8m床", "339.00")], 2, False),
        ("P-JJ-02", "慢回弹记忆棉枕", [("单只", "129.00")], 2, False),
        ("P-JJ-03", "乳胶独立弹簧床垫", [("1.5m", "1799.00"), ("1.8m", "1999.00")], 0.4, False),
        ("P-JJ-04", "厨房多层收纳置物架", [("三层", "89.00")], 2, False),
        ("P-JJ-05", "麦饭石不粘炒锅", [("30cm", "159.00"), ("32cm", "179.00")], 1.5, False),
        ("P-JJ-06", "超声波香薰加湿器", [("白色", "119.00")], 1.5, False),
        ("P-JJ-07", "懒人沙发豆袋", [("奶白", "259.00"), ("燕麦", "259.00")], 1, False),
        ("P-JJ-08", "纯棉浴巾毛巾套装", [("三件套", "69.90")], 2, False),
    ],
    "数码": [
        ("P-SM-01", "降噪真无线蓝牙耳机", [("白色", "299.00"), ("黑色", "299.00")], 2.5, False),
        ("P-SM-02", "20000mAh快充充电宝", [("20000mAh", "129.00")], 2.5, False),
        ("P-SM-03", "Type-C快充数据线", [("1米", "9.90"), ("2米", "15.90")], 3, False),
        ("P-SM-04", "智能运动手表", [("曜石黑", "999.00"), ("星光银", "999.00")], 0.8, False),
        ("P-SM-05", "磁吸手机壳", [("iPhone 15", "39.00"), ("iPhone 16", "39.00"), ("iPhone 16 Pro", "45.00")], 2, False),
        ("P-SM-06", "便携家用投影仪", [("标准版", "1999.00")], 0.4, False),
        ("P-SM-07", "静音机械键盘", [("茶轴", "349.00"), ("红轴", "349.00")], 1, False),
        ("P-SM-08", "65W氮化镓充电器", [("65W", "89.00")], 2, False),
    ],
}
NO_REASON_EXCLUDED = frozenset({"P-SP-07"})
# The planted quality problem: these two products fail far more often than the rest.
DEFECT_PRODUCTS = ("P-MZ-02", "P-MY-04")

HOSTS: dict[str, tuple[str, str]] = {
    "小雅": ("美妆", "服饰"),
    "阿强": ("数码", "家居"),
    "琳琳": ("服饰", "美妆"),
    "大可": ("食品", "家居"),
    "木子": ("母婴", "食品"),
    "安安": ("母婴", "服饰"),
}
TITLES = {
    "美妆": ["双11美妆专场", "秋冬护肤囤货节", "口红试色专场", "宠粉美妆福利夜"],
    "服饰": ["秋冬穿搭专场", "工厂直降女装节", "毛衣开衫上新专场", "通勤穿搭福利场"],
    "母婴": ["宝妈好物节", "萌宝囤货专场", "母婴好物源头直发"],
    "食品": ["零食囤货节", "产地直发年货节", "深夜食堂零食场"],
    "家居": ["家居焕新季", "好物进家专场", "床品清仓福利场"],
    "数码": ["数码狂欢夜", "学生党数码专场", "黑科技好物场"],
}
# The two sessions whose host over-promised: (host, main category, roughly how many days ago).
CLAIM_SESSIONS = (("琳琳", "服饰", 20), ("阿强", "数码", 35))

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高梁宋郑谢韩唐冯于董萧程曹袁邓许傅沈曾彭吕苏卢蒋蔡贾丁魏薛叶阎余潘杜戴夏钟汪田任姜范方石姚谭廖邹熊金陆郝孔白崔康毛邱秦江史顾侯邵孟龙万段漕钱汤尹黎易常武乔贺赖龚文"
NICKNAMES = ["爱吃草莓的猫", "小鹿不迷路", "柠檬不萌", "快乐星球居民", "一只小胖橘", "晚风与你", "奶茶续命中",
             "熬夜冠军", "宝妈小周", "阿杰不加班", "桃子汽水", "秋天的第一杯奶茶", "山海有归期", "芒果布丁"]
CITIES = ["上海市", "北京市", "广州市", "深圳市", "成都市", "杭州市", "武汉市", "南京市", "重庆市", "西安市",
          "苏州市", "长沙市", "郑州市", "天津市", "青岛市", "合肥市", "福州市", "昆明市", "沈阳市", "济南市"]
CARRIERS = {"SF": "顺丰速运", "YTO": "圆通速递", "ZTO": "中通快递", "JD": "京东物流"}
CARRIER_WEIGHTS = {"SF": 25, "YTO": 25, "ZTO": 35, "JD": 15}
COURIERS = "张王李刘陈杨赵黄周吴"

# -- reasons, descriptions and notes ----------------------------------------------------------

BASE_REASONS = {
    "quality.defect": 11, "quality.damaged": 9, "quality.counterfeit_suspected": 2,
    "fulfillment.wrong_item": 5, "fulfillment.missing_item": 6, "description.not_as_described": 8,
    "description.host_claim_mismatch": 3, "fit.size": 13, "preference.style": 8,
    "preference.changed_mind": 17, "price.promo_dispute": 5, "logistics.delay": 5,
    "logistics.lost": 2, "other": 2,
}
KINDS_BY_REASON: dict[str, dict[str, int]] = {
    "quality.defect": {"return_refund": 60, "exchange": 25, "refund_only": 15},
    "quality.damaged": {"reship": 40, "return_refund": 30, "refund_only": 30},
    "quality.counterfeit_suspected": {"return_refund": 70, "complaint": 30},
    "fulfillment.wrong_item": {"exchange": 60, "return_refund": 40},
    "fulfillment.missing_item": {"reship": 70, "refund_only": 30},
    "description.not_as_described": {"return_refund": 80, "refund_only": 20},
    "description.host_claim_mismatch": {"return_refund": 60, "complaint": 20, "refund_only": 20},
    "fit.size": {"exchange": 60, "return_refund": 40},
    "preference.style": {"return_refund": 100},
    "preference.changed_mind": {"return_refund": 100},
    "price.promo_dispute": {"refund_only": 70, "complaint": 30},
    "logistics.delay": {"complaint": 70, "refund_only": 30},
    "logistics.lost": {"reship": 50, "refund_only": 50},
    "other": {"complaint": 100},
}
DESCRIPTIONS: dict[str, list[str]] = {
    "quality.defect": ["{p}用了两天就坏了", "{p}做工很粗糙，有明显瑕疵", "收到的{p}开线了，质量太差",
                       "{p}有异味，质量有问题", "{p}用了一次就出问题了，申请退货"],
    "quality.damaged": ["收到就破了，外箱都压扁了", "{p}外包装破损，里面也摔坏了", "快递送到时盒子是湿的，{p}已经损坏",
                        "收到就破了，有裂痕，拍了照片"],
    "quality.counterfeit_suspected": ["怀疑不是正品，和专柜买的味道不一样", "没有防伪码，扫码查不到，怀疑是假货",
                                      "{p}包装印刷模糊，像是仿品"],
    "fulfillment.wrong_item": ["下单的是{v}，发来的不是这个款", "发错货了，我买的是{p}，收到的颜色不对", "发错尺码了，我拍的是{v}"],
    "fulfillment.missing_item": ["少发了一个", "买了两件只收到一件", "赠品没有收到，直播间说好的送小样", "套装里少了一件，包装是完整的"],
    "description.not_as_described": ["颜色和直播间看到的差很多，实物偏暗", "实物比图片小很多", "材质摸起来很廉价，和详情页描述不符"],
    "fit.size": ["尺码偏小，平时穿M这个L都紧", "尺码偏大，按主播推荐选的还是大了一号", "宝宝穿着太小了，想换大一码", "裤长太长了，想换小一码"],
    "preference.style": ["上身效果不好看，和想象的不一样", "颜色不适合我", "款式有点老气，不太喜欢"],
    "preference.changed_mind": ["不想要了，七天无理由退货", "买重复了，申请退货", "家里人已经买了，申请退货"],
    "price.promo_dispute": ["直播间说的满300减50没用上，请退差价", "刚买完第二天就降价了30块，要求补差价",
                            "主播说前100名送赠品，我是第20单也没收到"],
    "logistics.delay": ["下单一周还没到，物流一直不更新", "说好48小时发货，物流太慢了", "卡在中转站三天不动了"],
    "logistics.lost": ["物流好几天没更新了，快递说包裹丢了", "查不到物流，快递员说件丢了"],
    "other": ["想开发票，客服一直没回复", "包装太简陋了，送人不合适", "希望能补寄一张说明书"],
}
PRE_SHIP_CANCEL = ["拍错了，还没发货麻烦退款", "不想要了，未发货请直接退款", "地址填错了，先退款重新拍"]
DEFECT_DESCRIPTIONS = {
    "P-MZ-02": ["精华液泵头按不出来，还漏液，整盒都黏糊糊的", "用了精华液脸上起红疹，怀疑有问题",
                "精华液有股怪味，和之前买的不一样，瓶口漏液", "精华液瓶子有裂纹，漏了小半瓶"],
    "P-MY-04": ["保温杯漏水，孩子书包全湿了", "保温杯根本不保温，早上装的热水中午就凉了",
                "杯盖密封圈脱落，孩子喝水会漏", "保温杯内胆有锈点，不敢给孩子用"],
}
HOST_CLAIMS = {
    "服饰": ["主播说是纯棉的收到是化纤", "主播说不起球，洗了一次就起球了", "主播说是100%羊毛，吊牌写的羊毛只有30%",
             "主播说不掉色，洗一次就掉色了"],
    "数码": ["主播说续航30小时，实际不到10小时就没电", "主播说支持快充，实际充得很慢", "主播说是主动降噪，降噪效果几乎没有",
             "主播说防水，淋了点雨就坏了"],
    "美妆": ["主播说敏感肌可以用，用了就过敏", "主播说持妆一整天，两小时就脱妆了"],
    "母婴": ["主播说是食品级材质，收到一股塑料味"],
    "食品": ["主播说是无添加，配料表里有防腐剂", "主播说是今年新货，生产日期是去年的"],
    "家居": ["主播说是A类纯棉，洗了就缩水掉色"],
    "": ["主播说买一送一，结果只收到一个"],
}
APPROVE_NOTES = {
    "refund_only": ["核实无误，同意仅退款", "已核实，同意退款，给您带来不便深表歉意"],
    "return_refund": ["同意退货退款，请7天内寄回，运费由我们承担", "已核实，同意退货，请保持商品完好寄回"],
    "exchange": ["同意换货，请先寄回原商品", "同意换货，收到退货后第一时间发出新品"],
    "reship": ["核实属实，同意补发", "同意补发，今天安排发出"],
    "complaint": ["已记录，向买家致歉并补偿5元无门槛券", "已反馈给直播运营，向买家致歉"],
}
REQUEST_INFO = ["请提供商品问题部位的照片及外包装照片", "请提供开箱视频，方便我们核实", "请提供吊牌和成分标签照片"]
CUSTOMER_REPLY = ["已上传照片，请查看", "补充了开箱视频", "照片发了，麻烦尽快处理"]
REJECT_NOTES = ["商品已拆封使用，不支持七天无理由退货", "凭证不足，无法判定为质量问题", "已超过售后期限",
                "价保仅限活动期内，该订单不在价保范围"]
APPEAL_NOTES = ["我有开箱视频可以证明，请重新处理", "商品没有使用过，吊牌都在，请重新审核"]
CANCEL_NOTES = ["买家主动撤销售后申请", "和买家协商一致，买家撤销申请", "问题已解决，买家撤销申请"]
CLOSE_NOTES = ["售后已完成", "退款已到账，买家确认", "已处理完毕"]


# -- the plan -------------------------------------------------------------------------------


@dataclass
class Step:
    at: datetime
    op: str  # "act" or "track"
    action: str
    actor: Principal | None
    fields: dict[str, Any]
    status_after: str
    event: Any = None  # TrackingEventIn for "track"


@dataclass
class TicketPlan:
    order_external_id: str
    external_id: str
    kind: str
    reason: str
    sku: str
    quantity: int
    amount: Decimal
    description: str
    evidence: list[str]
    requested_at: datetime
    received_at: datetime
    # What happens next depends on the intake decision of the published policy, which only the
    # service knows: one path per status the intake can leave the ticket in.
    variants: dict[str, list[Step]] = field(default_factory=dict)
    backlog: float = 1.0  # < BACKLOG: a recent ticket that waits longer than it should
    backlog_at: float = 0.0
    start: str = "pending_review"  # the status the intake left it in (known once opened)
    stop: int = 0  # how many steps of the chosen path have happened by "now"
    ticket_id: int | None = None

    @property
    def steps(self) -> list[Step]:
        return self.variants[self.start]

    @property
    def final_status(self) -> str:
        return self.steps[self.stop - 1].status_after if self.stop else self.start

    def choose(self, start: str, now: datetime) -> None:
        """Take the path for the intake's outcome and see how far it has got by `now`."""
        if start not in self.variants:
            raise RuntimeError(f"the intake left a {self.kind} request in {start!r}, which the demo has no path for")
        self.start = start
        self.stop = sum(1 for step in self.steps if step.at <= now)
        if self.stop and self.backlog < BACKLOG and self.requested_at > now - timedelta(days=6):
            self.stop = int(self.backlog_at * self.stop)


@dataclass
class OrderPlan:
    external_id: str
    body: Any  # OrderIn
    received_at: datetime
    shipment: tuple[str, str, datetime] | None = None  # carrier, tracking number, registered at
    events: list[Any] = field(default_factory=list)  # TrackingEventIn already happened by "now"
    ticket: TicketPlan | None = None


class _Planner:
    def __init__(self, rng: random.Random, now: datetime, tz: ZoneInfo) -> None:
        self.rng, self.now, self.tz = rng, now, tz
        self.used: set[str] = set()

    # small helpers ---------------------------------------------------------------------

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def unique(self, make: Any) -> str:
        while True:
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value

    def tracking_number(self, carrier: str) -> str:
        prefix = {"SF": lambda: "SF" + self.digits(13), "YTO": lambda: "YT" + self.digits(13),
                  "ZTO": lambda: "7" + self.rng.choice("358") + self.digits(12), "JD": lambda: "JDVA" + self.digits(11)}
        return self.unique(prefix[carrier])

    def carrier(self) -> str:
        return self.rng.choices(list(CARRIER_WEIGHTS), weights=list(CARRIER_WEIGHTS.values()))[0]

    def minutes(self, lo: float, hi: float) -> timedelta:
        return timedelta(minutes=self.rng.uniform(lo, hi))

    def working(self, t: datetime) -> datetime:
        """The team works 08:00–01:00 Beijing time (live sessions end late); night requests wait for the morning."""
        local = t.astimezone(self.tz)
        if 1 <= local.hour < 8:
            local = local.replace(hour=8, minute=0, second=0, microsecond=0) + self.minutes(0, 60)
        return ensure_utc(local)

    # sessions and catalogue -------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]]:
        days = sorted(self.rng.sample(range(1, DAYS + 1), 40), reverse=True)
        hosts = list(HOSTS)
        order: list[str] = []
        while len(order) < len(days):
            self.rng.shuffle(hosts)
            order.extend(hosts)
        local_today = self.now.astimezone(self.tz).date()
        out = []
        for i, (ago, host) in enumerate(zip(days, order)):
            day = local_today - timedelta(days=ago)
            start = datetime(day.year, day.month, day.day, self.rng.choice((19, 19, 20)), self.rng.choice((0, 30)), tzinfo=self.tz)
            end = start + timedelta(hours=self.rng.choice((3, 3.5, 4, 5)))
            start, end = ensure_utc(start), min(ensure_utc(end), self.now - timedelta(hours=1))
            if end - start < timedelta(hours=1):
                continue
            main = HOSTS[host][0] if self.rng.random() < 0.7 else HOSTS[host][1]
            # The shop is growing (and 双11 is near): recent sessions sell up to three times more.
            weight = self.rng.uniform(0.6, 1.8) * (0.6 + 1.2 * (1 - ago / DAYS))
            out.append({"host": host, "start": start, "end": end, "main": main, "ago": ago,
                        "weight": weight, "claims": False, "n": i})
        for host, main, ago in CLAIM_SESSIONS:
            candidates = [s for s in out if s["host"] == host and not s["claims"]]
            if candidates:
                s = min(candidates, key=lambda s: (abs(s["ago"] - ago), s["n"]))
                s.update(main=main, claims=True, weight=s["weight"] * 1.5)
        for s in out:
            s["title"] = self.rng.choice(TITLES[s["main"]])
            local = s["start"].astimezone(self.tz)
            s["external_id"] = f"LS{local:%Y%m%d}-{list(HOSTS).index(s['host']) + 1:02d}"
            s["second"] = HOSTS[s["host"]][1] if s["main"] == HOSTS[s["host"]][0] else HOSTS[s["host"]][0]
        return out

    def product(self, category: str) -> tuple[str, str, list[tuple[str, str]], float, bool]:
        products = CATALOGUE[category]
        return self.rng.choices(products, weights=[p[3] for p in products])[0]

    # orders -------------------------------------------------------------------------------

    def orders(self, count: int) -> list[OrderPlan]:
        from aftersales.orders.schemas import CustomerIn, LiveSessionIn, OrderIn, OrderItemIn

        sessions = self.sessions()
        weights = [s["weight"] for s in sessions]
        drafts: list[tuple[datetime, dict[str, Any] | None]] = []
        for _ in range(count):
            if self.rng.random() < 0.08 or not sessions:
                # Bought later from the shop window (橱窗), outside any live session.
                at = self.now - timedelta(days=self.rng.uniform(0, DAYS))
                local = at.astimezone(self.tz)
                at = ensure_utc(local.replace(hour=self.rng.randint(9, 23)))
                drafts.append((min(at, self.now - timedelta(minutes=30)), None))
            else:
                s = self.rng.choices(sessions, weights=weights)[0]
                drafts.append((s["start"] + (s["end"] - s["start"]) * self.rng.random() ** 1.4, s))
        drafts = sorted(((at.replace(microsecond=0), s) for at, s in drafts), key=lambda d: d[0])

        customers: list[tuple[str, str, str]] = []
        pool: list[int] = []
        plans: list[OrderPlan] = []
        for placed, s in drafts:
            if not customers or self.rng.random() < 0.6:
                name = (self.rng.choice(SURNAMES) + "*" * self.rng.randint(1, 2)) if self.rng.random() < 0.7 else self.rng.choice(NICKNAMES)
                customers.append((self.unique(lambda: "dy" + self.digits(12)), name, self.rng.choice(CITIES)))
                idx = len(customers) - 1
            else:
                idx = self.rng.choice(pool)
            pool.append(idx)
            cust_id, cust_name, city = customers[idx]

            cats = (s["main"], s["second"]) if s else tuple(CATALOGUE)
            items: list[Any] = []
            products: list[tuple[Any, str]] = []
            for _ in range(self.rng.choices((1, 2, 3), weights=(65, 25, 10))[0]):
                category = cats[0] if (s and self.rng.random() < 0.8) else self.rng.choice(cats)
                prod = self.product(category)
                variant, price = self.rng.choice(prod[2])
                sku = f"{prod[0]}-{prod[2].index((variant, price)) + 1:02d}"
                if any(i.sku == sku for i in items):
                    continue
                qty = 2 if (Decimal(price) < 60 and self.rng.random() < 0.3) else 1
                items.append(OrderItemIn(sku=sku, product_id=prod[0], product_name=f"{prod[1]} {variant}",
                                         category=category, quantity=qty, unit_price=Decimal(price)))
                products.append((prod, variant))
            total = sum((i.unit_price * i.quantity for i in items), Decimal("0"))
            discount = Decimal(self.rng.choice((5, 10, 20, 30, 50))) if total > 100 and self.rng.random() < 0.35 else Decimal("0")
            paid_amount = total - min(discount, total / 4).quantize(Decimal("0.01"), ROUND_DOWN)
            paid_at = placed + timedelta(seconds=self.rng.randint(5, 180))
            live = None
            if s:
                live = LiveSessionIn(external_id=s["external_id"], host=s["host"], title=s["title"],
                                     started_at=s["start"], ended_at=s["end"])
            external_id = self.unique(lambda: "69" + self.digits(17))
            body = OrderIn(customer=CustomerIn(external_id=cust_id, name=cust_name), placed_at=placed, paid_at=paid_at,
                           paid_amount=paid_amount, items=items, live_session=live, shop=SHOP,
                           channel="douyin" if self.rng.random() < 0.85 else "kuaishou")
            plan = OrderPlan(external_id=external_id, body=body, received_at=paid_at + timedelta(seconds=self.rng.randint(1, 20)))
            self.order_story(plan, s, products, city)
            plans.append(plan)
        return plans

    def order_story(self, plan: OrderPlan, s: dict[str, Any] | None, products: list[Any], city: str) -> None:
        """Decide the ticket (if any) first: it shapes the outbound parcel (never sent, slow, lost)."""
        items = plan.body.items
        defect = [i for i, it in enumerate(items) if it.product_id in DEFECT_PRODUCTS]
        claims = bool(s and s["claims"])
        chance = 0.55 if defect else 0.5 if claims else 0.25
        reason: str | None = None
        idx = 0
        if self.rng.random() < chance:
            if claims and self.rng.random() < 0.6:
                reason = "description.host_claim_mismatch"
                main = [i for i, it in enumerate(items) if it.category == s["main"]]  # type: ignore[index]
                idx = self.rng.choice(main or list(range(len(items))))
            elif defect and self.rng.random() < 0.65:
                reason, idx = "quality.defect", self.rng.choice(defect)
            else:
                sized = [i for i, (prod, _v) in enumerate(products) if prod[4]]
                reasons = [r for r in BASE_REASONS if sized or r != "fit.size"]
                reason = self.rng.choices(reasons, weights=[BASE_REASONS[r] for r in reasons])[0]
                idx = self.rng.choice(sized) if reason == "fit.size" else self.rng.randrange(len(items))
        pre_ship = reason == "preference.changed_mind" and self.rng.random() < 0.25
        profile = "lost" if reason == "logistics.lost" else "slow" if reason == "logistics.delay" else "normal"

        ship_at = self.working(plan.body.paid_at + timedelta(hours=self.rng.uniform(2, 30))).replace(microsecond=0)
        delivered_at: datetime | None = None
        last_event_at = ship_at
        if pre_ship:
            requested = plan.body.paid_at + self.minutes(20, 360)
            if requested < min(ship_at, self.now - timedelta(minutes=10)):
                ship_at = self.now + timedelta(days=1)  # the order is refunded before it ships
            else:
                pre_ship, reason = False, None
        if ship_at <= self.now:
            carrier = self.carrier()
            number = self.tracking_number(carrier)
            plan.shipment = (carrier, number, ship_at)
            events = self.parcel(carrier, number, ship_at, WAREHOUSE, city, profile)
            plan.events = [e for e in events if e.occurred_at <= self.now]
            delivered = [e for e in events if e.status == "3"]
            delivered_at = delivered[0].occurred_at if delivered and delivered[0].occurred_at <= self.now else None
            last_event_at = plan.events[-1].occurred_at if plan.events else ship_at
        if reason is None:
            return
        if pre_ship:
            pass  # requested was set above
        elif reason == "logistics.delay":
            requested = ship_at + timedelta(hours=self.rng.uniform(70, 100))
        elif reason == "logistics.lost":
            requested = last_event_at + timedelta(hours=self.rng.uniform(72, 120))
        elif delivered_at is None:
            return
        elif reason == "quality.damaged":
            requested = delivered_at + self.minutes(30, 24 * 60)
        elif reason == "preference.changed_mind":
            requested = delivered_at + self.minutes(120, 6.5 * 24 * 60)
        else:
            requested = delivered_at + timedelta(hours=min(self.rng.expovariate(1 / 40), 200) + 0.5)
        if requested > self.now - timedelta(minutes=10):
            return
        plan.ticket = self.ticket(plan, reason, idx, requested, pre_ship, products[idx], city)

    def parcel(self, carrier: str, number: str, at: datetime, origin: str, dest: str, profile: str = "normal") -> list[Any]:
        """Kuaidi100-style scans: 1 揽收 → 0 在途 → 5 派件 → 3 签收."""
        from aftersales.orders.schemas import TrackingEventIn

        name = CARRIERS[carrier]
        speed = 0.6 if carrier in ("SF", "JD") else 1.0
        courier = self.rng.choice(COURIERS) + "师傅"
        phone = f"1{self.rng.choice('3589')}{self.digits(1)}****{self.digits(4)}"
        hub_o, hub_d = origin.removesuffix("市") + "转运中心", dest.removesuffix("市") + "转运中心"
        t = at + self.minutes(20, 180)
        scans = [("1", t, origin, f"【{origin}】{name} 已揽收")]
        t += timedelta(hours=self.rng.uniform(3, 8) * speed)
        scans.append(("0", t, origin, f"快件已从【{hub_o}】发出，下一站【{hub_d}】"))
        if profile == "lost":
            return [self._event(TrackingEventIn, carrier, number, *scan) for scan in scans]
        if profile == "slow":
            t += timedelta(hours=self.rng.uniform(60, 100))
            scans.append(("0", t, dest, f"快件在【{hub_d}】滞留，正在加急处理"))
        t += timedelta(hours=self.rng.uniform(14, 36) * speed)
        scans.append(("0", t, dest, f"快件已到达【{hub_d}】"))
        t = self.working(t + timedelta(hours=self.rng.uniform(4, 12)))
        scans.append(("5", t, dest, f"【{dest}】快件已交给{courier}，正在派送途中（联系电话：{phone}）"))
        t += self.minutes(40, 300)
        signer = self.rng.choice(("本人签收", "家门口", "菜鸟驿站代收", "快递柜"))
        scans.append(("3", t, dest, f"【{dest}】已签收，签收人：{signer}。如有疑问请联系{courier}：{phone}"))
        return [self._event(TrackingEventIn, carrier, number, *scan) for scan in scans]

    @staticmethod
    def _event(cls: Any, carrier: str, number: str, state: str, at: datetime, location: str, desc: str) -> Any:
        return cls(carrier=carrier, tracking_number=number, source="kuaidi100", status=state,
                   occurred_at=at.replace(microsecond=0), location=location, description=desc)

    # tickets ------------------------------------------------------------------------------

    def ticket(self, plan: OrderPlan, reason: str, idx: int, requested: datetime, pre_ship: bool,
               product: tuple[Any, str], city: str) -> TicketPlan:
        item = plan.body.items[idx]
        (prod, variant) = product
        if pre_ship:
            kind = "refund_only"
            text = self.rng.choice(PRE_SHIP_CANCEL)
        else:
            kinds = KINDS_BY_REASON[reason]
            kind = self.rng.choices(list(kinds), weights=list(kinds.values()))[0]
            if reason == "quality.defect" and item.product_id in DEFECT_PRODUCTS and self.rng.random() < 0.8:
                text = self.rng.choice(DEFECT_DESCRIPTIONS[item.product_id])
            elif reason == "description.host_claim_mismatch":
                text = self.rng.choice(HOST_CLAIMS.get(item.category, []) + HOST_CLAIMS[""])
            else:
                text = self.rng.choice(DESCRIPTIONS[reason]).format(p=prod[1], v=variant)
        total = sum((i.unit_price * i.quantity for i in plan.body.items), Decimal("0"))
        share = (item.unit_price * item.quantity * plan.body.paid_amount / total).quantize(Decimal("0.01"), ROUND_DOWN)
        if pre_ship:
            amount = plan.body.paid_amount
        elif kind in ("exchange", "reship", "complaint"):
            amount = Decimal("0")
        elif kind == "refund_only" and reason in ("quality.damaged", "quality.defect", "price.promo_dispute", "logistics.delay"):
            amount = min(share, (share * Decimal(self.rng.choice(("0.1", "0.2", "0.3")))).quantize(Decimal("1")) or Decimal("5"))
        else:
            amount = share
        evidence = []
        if reason.startswith(("quality.", "fulfillment.", "description.")):
            evidence = [f"https://evidence.example.com/as/{plan.external_id}-{n}.jpg" for n in range(1, self.rng.randint(1, 3) + 1)]
        received = requested + timedelta(seconds=self.rng.randint(3, 120))
        ticket = TicketPlan(
            order_external_id=plan.external_id, external_id=self.unique(lambda: "7" + self.digits(18)), kind=kind,
            reason=reason, sku=item.sku, quantity=item.quantity, amount=amount, description=text, evidence=evidence,
            requested_at=requested.replace(microsecond=0), received_at=received.replace(microsecond=0),
        )
        starts = ["pending_review", workflow.transition(kind, "requested", "auto_approve")]
        if ("requested", "fast_refund") in workflow.TRANSITIONS[kind]:
            starts.append(workflow.transition(kind, "requested", "fast_refund"))
        for start in starts:
            if start not in ticket.variants:
                ticket.variants[start] = _Path(self, ticket, city, pre_ship, start).build()
        ticket.backlog, ticket.backlog_at = self.rng.random(), self.rng.random()
        return ticket


class _Path:
    """Builds one ticket's steps in time order, checking each against the workflow table."""

    def __init__(self, planner: _Planner, ticket: TicketPlan, city: str, pre_ship: bool, start: str) -> None:
        self.p, self.rng, self.ticket, self.city, self.pre_ship = planner, planner.rng, ticket, city, pre_ship
        self.kind = ticket.kind
        self.t = ticket.received_at
        self.status = start
        self.steps: list[Step] = []
        self.agent = self.rng.choice(AGENTS)

    def act(self, lo: float, hi: float, action: str, actor: Principal, *, work: bool = False, **fields: Any) -> None:
        t = self.t + self.p.minutes(lo, hi)
        if work:
            t = self.p.working(t)
        self.status = workflow.transition(self.kind, self.status, action, inspection_passed=fields.get("passed"))
        self.t = t.replace(microsecond=0)
        self.steps.append(Step(self.t, "act", action, actor, fields, self.status))

    def agent_act(self, lo: float, hi: float, action: str, **fields: Any) -> None:
        self.act(lo, hi, action, self.agent, work=True, **fields)

    def agent_reply(self, action: str, **fields: Any) -> None:
        """An agent picking the ticket up from the queue: usually within half an hour, sometimes hours."""
        wait = min(self.rng.expovariate(1 / 25), 300) + 2
        self.act(wait, wait, action, self.agent, work=True, **fields)

    def parcel(self, direction: str, origin: str, dest: str) -> None:
        carrier = self.p.carrier()
        number = self.p.tracking_number(carrier)
        action = "add_return_tracking" if direction == "return" else "ship_replacement"
        if direction == "return":
            self.act(60, 40 * 60, action, PLATFORM, carrier=carrier, tracking_number=number)
        else:
            self.act(60, 20 * 60, action, WAREHOUSE_AGENT, work=True, carrier=carrier, tracking_number=number)
        for event in self.p.parcel(carrier, number, self.t, origin, dest):
            if event.status == "3":
                move = "return_delivered" if direction == "return" else "replacement_delivered"
                self.status = workflow.transition(self.kind, self.status, move)
            self.t = max(self.t, event.occurred_at)
            self.steps.append(Step(event.occurred_at, "track", "", None, {}, self.status, event))

    def refund(self) -> None:
        self.act(5, 240, "confirm_refund", FINANCE, work=True, refund_reference="RF" + self.p.digits(16))
        self.agent_act(10, 180, "close", note=self.rng.choice(CLOSE_NOTES))

    def build(self) -> list[Step]:
        if self.status != "pending_review":
            self.after_approval()  # approved automatically at intake
            return self.steps
        rng, kind = self.rng, self.kind
        if self.pre_ship:
            self.agent_reply("approve", note="未发货，同意退款")
            self.refund()
            return self.steps
        asks = 0.3 if self.ticket.reason.startswith("quality.") else 0.1
        if rng.random() < asks:
            self.agent_reply("request_info", note=rng.choice(REQUEST_INFO))
            if rng.random() < 0.12:
                self.act(48 * 60, 72 * 60, "cancel", PLATFORM, note="买家超时未补充凭证，售后关闭")
                return self.steps
            self.act(30, 30 * 60, "customer_reply", PLATFORM, note=rng.choice(CUSTOMER_REPLY))
        roll = rng.random()
        reject = {"preference.changed_mind": 0.12, "price.promo_dispute": 0.3, "quality.counterfeit_suspected": 0.2, "other": 0.15}
        if roll < 0.04:
            self.act(30, 10 * 60, "cancel", PLATFORM, note=rng.choice(CANCEL_NOTES))
            return self.steps
        if kind == "complaint" and rng.random() < 0.4:
            self.agent_reply("close", note="已向买家致歉并说明情况")
            return self.steps
        if roll < 0.04 + reject.get(self.ticket.reason, 0.05):
            self.agent_reply("reject", note=rng.choice(REJECT_NOTES))
            if rng.random() < 0.3:
                self.act(120, 30 * 60, "appeal", PLATFORM, note=rng.choice(APPEAL_NOTES))
            else:
                self.agent_act(60, 24 * 60, "close", note="驳回后买家未申诉，关闭")
                return self.steps
        amount = self.ticket.amount if kind == "refund_only" and self.ticket.amount > 0 else None
        self.agent_reply("approve", note=rng.choice(APPROVE_NOTES[kind]), **({"amount": amount} if amount is not None else {}))
        self.after_approval()
        return self.steps

    def after_approval(self) -> None:
        rng, kind = self.rng, self.kind
        if self.status == "refunding":
            self.refund()
        elif kind == "complaint":
            self.agent_act(30, 24 * 60, "close", note=rng.choice(CLOSE_NOTES))
        elif kind == "reship":
            self.parcel("replacement", WAREHOUSE, self.city)
        else:  # return_refund, exchange: goods come back first
            if rng.random() < 0.06:
                self.act(24 * 60, 72 * 60, "cancel", PLATFORM, note="东西不退了，自己留着用")
                return
            self.parcel("return", self.city, WAREHOUSE)
            passed = rng.random() < 0.93
            note = "退回商品完好，配件齐全" if passed else "退回商品有明显使用痕迹，影响二次销售"
            self.act(60, 20 * 60, "record_inspection", WAREHOUSE_AGENT, work=True, passed=passed, note=note)
            if not passed:
                self.agent_act(10, 120, "reject", note="质检未通过：" + note)
                self.agent_act(60, 24 * 60, "close", note="质检未通过，退回买家")
            elif kind == "return_refund":
                self.refund()
            else:
                self.parcel("replacement", WAREHOUSE, self.city)


def _force_coverage(tickets: list[TicketPlan], candidates: list[TicketPlan]) -> None:
    """Make sure every status a ticket can rest in appears at least once, using the latest candidates.

    A chosen ticket stops right after a step (already in the past) that reached the missing
    status: its later steps simply have not happened yet.
    """
    for status in (s for s in workflow.STATUSES if s != "requested"):
        counts = Counter(t.final_status for t in tickets)
        if counts[status]:
            continue
        for ticket in sorted(candidates, key=lambda t: (t.requested_at, t.external_id), reverse=True):
            if counts[ticket.final_status] < 2 and ticket.final_status != "closed":
                continue
            stops = [i + 1 for i, step in enumerate(ticket.steps[: ticket.stop]) if step.status_after == status]
            if status == ticket.start:
                stops.insert(0, 0)
            if stops:
                # Stop at the last consecutive step in that status (e.g. every scan of a parcel in transit).
                stop = stops[0]
                while stop < ticket.stop and ticket.steps[stop].status_after == status:
                    stop += 1
                ticket.stop = stop
                break


# -- playing the plan through the services -----------------------------------------------------


async def _reset(engine: Any) -> None:
    from sqlalchemy import inspect, text

    from aftersales.db import Base

    async with engine.begin() as conn:
        existing = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        names = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name in existing]
        if not names:
            return
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in names:
                await conn.execute(text(f"DELETE FROM {name}"))


async def _without_existing(factory: Any, plans: list[OrderPlan]) -> list[OrderPlan]:
    """Without a reset, orders already there (same seed, same anchor) are left alone, with their tickets."""
    from sqlalchemy import select

    from aftersales.orders.models import Order

    existing: set[str] = set()
    async with factory() as session:
        for start in range(0, len(plans), 500):
            ids = [p.external_id for p in plans[start : start + 500]]
            existing.update((await session.execute(select(Order.external_id).where(Order.external_id.in_(ids)))).scalars())
        await session.rollback()
    return [p for p in plans if p.external_id not in existing]


async def _write_orders(session: Any, clock: FrozenClock, plans: list[OrderPlan]) -> None:
    """Orders, customers, live sessions, outbound parcels and their scans of one batch, in bulk.

    The rows are what OrderService.upsert_order / register_shipment / ingest_tracking would write
    (scans are normalized by OrderService.normalize_batch, the shipment takes the status of its
    latest scan, the order its sign-for time), but a few multi-row INSERTs per hundred orders keep
    the default demo fast; tickets below go through the services step by step.
    """
    from sqlalchemy import insert, select

    from aftersales.db import dialect_insert
    from aftersales.orders.models import Customer, LiveSession, Order, OrderItem, Shipment, TrackingEvent
    from aftersales.orders.service import OrderService

    conn = await session.connection()
    customers: dict[str, dict[str, Any]] = {}
    lives: dict[str, dict[str, Any]] = {}
    for plan in plans:
        c, ls = plan.body.customer, plan.body.live_session
        customers.setdefault(c.external_id, {"external_id": c.external_id, "name": c.name, "created_at": plan.received_at})
        if ls is not None:
            lives.setdefault(ls.external_id, {"external_id": ls.external_id, "host": ls.host, "title": ls.title,
                                              "started_at": ls.started_at, "ended_at": ls.ended_at})
    for model, rows in ((Customer, customers), (LiveSession, lives)):
        if rows:
            stmt = dialect_insert(session, model.__table__).on_conflict_do_nothing(index_elements=["external_id"])
            await conn.execute(stmt, list(rows.values()))
    customer_ids = dict((await conn.execute(
        select(Customer.external_id, Customer.id).where(Customer.external_id.in_(list(customers))))).all())
    live_ids = dict((await conn.execute(
        select(LiveSession.external_id, LiveSession.id).where(LiveSession.external_id.in_(list(lives))))).all()) if lives else {}

    service = OrderService(session, clock)
    order_rows, shipment_rows, scans = [], [], {}
    for plan in plans:
        b = plan.body
        delivered_at = None
        if plan.shipment and plan.events:
            carrier, number, shipped_at = plan.shipment
            clock.set(plan.events[-1].occurred_at + timedelta(minutes=5))
            rows = service.normalize_batch(plan.events, len(plan.events))
            latest = max(rows, key=lambda r: r["occurred_at"])
            delivered_at = next((r["occurred_at"] for r in rows if r["status"] == "delivered"), None)
            scans[(carrier, number)] = rows
            shipment_rows.append({
                "order_external_id": plan.external_id, "direction": "outbound", "carrier": carrier, "tracking_number": number,
                "status": latest["status"], "raw_status": latest["raw_status"], "status_source": latest["source"],
                "last_event_at": latest["occurred_at"], "delivered_at": delivered_at, "created_at": shipped_at,
            })
        elif plan.shipment:
            carrier, number, shipped_at = plan.shipment
            shipment_rows.append({
                "order_external_id": plan.external_id, "direction": "outbound", "carrier": carrier, "tracking_number": number,
                "status": None, "raw_status": None, "status_source": None, "last_event_at": None, "delivered_at": None,
                "created_at": shipped_at,
            })
        order_rows.append({
            "external_id": plan.external_id, "shop": b.shop, "channel": b.channel,
            "customer_id": customer_ids[b.customer.external_id],
            "live_session_id": live_ids[b.live_session.external_id] if b.live_session else None,
            "paid_amount": b.paid_amount, "placed_at": b.placed_at, "paid_at": b.paid_at, "delivered_at": delivered_at,
            "created_at": plan.received_at, "updated_at": plan.received_at,
        })
    await conn.execute(insert(Order.__table__), order_rows)
    order_ids = dict((await conn.execute(
        select(Order.external_id, Order.id).where(Order.external_id.in_([p.external_id for p in plans])))).all())
    item_rows = [
        {"order_id": order_ids[plan.external_id], "sku": i.sku, "product_id": i.product_id, "product_name": i.product_name,
         "category": i.category, "quantity": i.quantity, "unit_price": i.unit_price}
        for plan in plans for i in plan.body.items
    ]
    if "no_reason_excluded" in OrderItem.__table__.c:
        for row in item_rows:
            # Fresh fruit is excluded from the 7-day no-reason return at checkout.
            row["no_reason_excluded"] = row["product_id"] in NO_REASON_EXCLUDED

    await conn.execute(insert(OrderItem.__table__), item_rows)
    if shipment_rows:
        for row in shipment_rows:
            row["order_id"] = order_ids[row.pop("order_external_id")]
        await conn.execute(insert(Shipment.__table__), shipment_rows)
        numbers = [row["tracking_number"] for row in shipment_rows]
        found = await conn.execute(
            select(Shipment.carrier, Shipment.tracking_number, Shipment.id).where(Shipment.tracking_number.in_(numbers)))
        event_rows = []
        for carrier, number, shipment_id in found.all():
            for row in scans.get((carrier, number), []):
                event_rows.append({**row, "shipment_id": shipment_id})
        if event_rows:
            await conn.execute(insert(TrackingEvent.__table__), event_rows)


async def _open_ticket(session: Any, clock: FrozenClock, settings: Settings, plan: TicketPlan, now: datetime) -> None:
    """The platform pushes the request; the published policy decides what happens at intake."""
    from aftersales.tickets.schemas import TicketIn, TicketItemIn
    from aftersales.tickets.service import TicketService

    clock.set(plan.received_at)
    body = TicketIn(
        order_external_id=plan.order_external_id, kind=plan.kind, reason_code=plan.reason,  # type: ignore[arg-type]
        requested_amount=plan.amount, description=plan.description, evidence_urls=plan.evidence,
        requested_at=plan.requested_at, external_id=plan.external_id,
        items=[TicketItemIn(sku=plan.sku, quantity=plan.quantity)] if plan.kind in ("return_refund", "exchange", "reship") else [],
    )
    ticket, _ = await TicketService(session, clock, settings.zone).open_ticket(body, PLATFORM)
    plan.ticket_id = ticket.id
    plan.choose(ticket.status, now)


async def _play_steps(session: Any, clock: FrozenClock, settings: Settings, plan: TicketPlan, now: datetime) -> None:
    from aftersales.auth.models import User
    from aftersales.orders.service import OrderService
    from aftersales.tickets.schemas import ActionIn
    from aftersales.tickets.service import TicketService

    assert plan.ticket_id is not None
    tickets = TicketService(session, clock, settings.zone)
    orders = OrderService(session, clock)
    ticket = await tickets.get(plan.ticket_id)
    steps = plan.steps[: plan.stop]
    i = 0
    while i < len(steps):
        step = steps[i]
        if step.op == "track":
            # Kuaidi100 pushes the parcel's scans as a snapshot: every scan so far in one push,
            # which arrives a few minutes after the latest scan (the one that may deliver it).
            j = i
            while j + 1 < len(steps) and steps[j + 1].op == "track":
                j += 1
            step = steps[j]
            clock.set(min(step.at + timedelta(minutes=3), now))
            events = [s.event for s in steps[i : j + 1]]
            await orders.ingest_tracking(events, limit=settings.max_tracking_batch, on_delivered=tickets.apply_carrier_delivery)
            ticket = await tickets.get(ticket.id)
            i = j + 1
        else:
            clock.set(step.at)
            actor = step.actor
            assert actor is not None
            if actor.role == "agent" and ticket.assignee_id is not None and ticket.assignee_id != actor.id:
                # Auto-assignment gave it to a real agent: that person works it.
                user = await session.get(User, ticket.assignee_id)
                actor = Principal(kind="user", id=ticket.assignee_id, name=user.username if user else actor.name, role="agent")
            ticket = await tickets.act(ticket.id, step.action, ActionIn(version=ticket.version, **step.fields), actor)
            i += 1
        if ticket.status != step.status_after:
            raise RuntimeError(f"demo plan drifted from the workflow: {ticket.number} is {ticket.status}, expected {step.status_after}")


async def generate_demo(
    settings: Settings,
    *,
    orders: int = 1500,
    seed: int = 20261125,
    reset: bool = True,
    progress: bool = True,
    now: datetime | None = None,
) -> list[str]:
    """Fill the database with `orders` orders of the last 60 days and everything that followed them."""
    from sqlalchemy import func, select

    import aftersales.models  # noqa: F401  (every table in the metadata)
    from aftersales.auth.tokens import create_token
    from aftersales.db import create_engine, create_sessionmaker
    from aftersales.models import LiveSession, Order, Shipment, Ticket, TrackingEvent

    started = time.perf_counter()
    anchor = ensure_utc(now) if now is not None else utcnow().replace(minute=0, second=0, microsecond=0)
    plans = _Planner(random.Random(seed), anchor, settings.zone).orders(orders)

    engine = create_engine(settings.database_url, pool_size=2)
    factory = create_sessionmaker(engine)
    clock = FrozenClock(anchor)
    bar: Any = None
    try:
        if reset:
            await _reset(engine)
        else:
            plans = await _without_existing(factory, plans)
        ticket_plans = sorted((p.ticket for p in plans if p.ticket is not None), key=lambda t: (t.received_at, t.external_id))
        recent_from = sum(1 for t in ticket_plans if t.requested_at < anchor - timedelta(days=RECENT_DAYS))
        recent_from = max(0, min(recent_from, len(ticket_plans) - RECENT_MIN))
        if progress:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=Console(stderr=True))
            bar.start()
        order_task = bar.add_task("orders", total=len(plans)) if bar else None
        ticket_task = bar.add_task("tickets", total=len(ticket_plans)) if bar else None

        for start in range(0, len(plans), BATCH):
            async with factory() as session:
                await _write_orders(session, clock, plans[start : start + BATCH])
                await session.commit()
            if bar:
                bar.update(order_task, advance=len(plans[start : start + BATCH]))

        async def in_batches(todo: list[TicketPlan], *, open_: bool, play: bool) -> None:
            for start in range(0, len(todo), BATCH):
                async with factory() as session:
                    for ticket_plan in todo[start : start + BATCH]:
                        if open_:
                            await _open_ticket(session, clock, settings, ticket_plan, anchor)
                        if play:
                            await _play_steps(session, clock, settings, ticket_plan, anchor)
                    await session.commit()
                if bar and play:
                    bar.update(ticket_task, advance=len(todo[start : start + BATCH]))

        # Older tickets are opened and worked one after the other; the recent ones are opened
        # first, so that a few of them can be left resting in each status, and then worked.
        await in_batches(ticket_plans[:recent_from], open_=True, play=True)
        await in_batches(ticket_plans[recent_from:], open_=True, play=False)
        _force_coverage(ticket_plans, ticket_plans[recent_from:])
        await in_batches(ticket_plans[recent_from:], open_=False, play=True)

        tokens: dict[str, str] = {}
        async with factory() as session:
            clock.set(anchor)
            for role in ROLES:
                tokens[role] = await create_token(session, clock, name=f"demo-{role}", role=role)
            await session.commit()

        async with factory() as session:
            async def count(model: Any) -> int:
                return int(await session.scalar(select(func.count()).select_from(model)) or 0)

            n_orders, n_sessions = await count(Order), await count(LiveSession)
            n_tracking, n_tickets = await count(TrackingEvent), await count(Ticket)
            by_direction = dict((await session.execute(select(Shipment.direction, func.count()).group_by(Shipment.direction))).all())
            by_status = dict((await session.execute(select(Ticket.status, func.count()).group_by(Ticket.status))).all())
            await session.rollback()
    finally:
        if bar:
            bar.stop()
        await engine.dispose()

    elapsed = time.perf_counter() - started
    share = f" ({n_tickets / n_orders:.0%} of orders)" if n_orders else ""
    lines = [
        f"demo data for the 60 days up to {anchor.astimezone(settings.zone):%Y-%m-%d %H:%M} ({settings.timezone}), seed {seed}",
        f"orders: {n_orders} in {n_sessions} live sessions with {len(HOSTS)} hosts",
        f"shipments: {sum(by_direction.values())} (outbound {by_direction.get('outbound', 0)}, "
        f"return {by_direction.get('return', 0)}, replacement {by_direction.get('replacement', 0)})",
        f"tracking events: {n_tracking}",
        f"tickets: {n_tickets}{share}",
    ]
    lines += [f"  {status}: {by_status[status]}" for status in workflow.STATUSES if by_status.get(status)]
    lines += [f"token {role}: {value}" for role, value in tokens.items()]
    lines.append(f"elapsed: {elapsed:.1f} s")
    return lines
