"""Products: the built-in catalog over the BOOST task categories, and the original file format.

A :class:`Product` holds the fields WebShop's engine derives from ``items_shuffle*.json`` after its
load step (``Title``, ``Description``, ``BulletPoints``, ``Attributes``, lower-cased ``options``,
``pricing``, ``Price`` tag, ``query``, ``product_category``), under Python names.

``build_catalog`` generates a deterministic catalog from a seed (~3,000 items by default) over the
task categories of the BOOST paper's table 4. ``load_catalog`` reads the original files
(``items_shuffle*.json`` for products, ``items_ins_v2*.json`` for per-product attributes) with the
original's field names and cleaning rules (options lower-cased, ``/`` shown as `` | ``, pricing
strings parsed into one price or a two-value range, ``DUMMY_ATTR`` when a product has no
attribute entry).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

# Table 4 of the BOOST paper lists these 36 two-level labels (its caption says 37). Labels are used
# verbatim as task categories, with the paper's en dash between the two levels.
CATEGORY_SEPARATOR = " – "

# Option value pools (values are lower-case, as the original stores them after loading).
_COLORS = [
    "black",
    "white",
    "navy blue",
    "red",
    "grey",
    "pink",
    "green",
    "beige",
    "brown",
    "purple",
    "silver",
    "gold",
    "rose gold",
    "blue",
    "yellow",
    "khaki",
    "burgundy",
    "teal",
]
_FINISHES = ["matte black", "brushed nickel", "chrome", "oil rubbed bronze", "white", "antique brass"]
_SHADES = ["fair", "light", "medium", "tan", "deep", "natural beige", "warm ivory", "ruby red", "nude pink"]
_APPAREL_SIZES = ["x-small", "small", "medium", "large", "x-large", "xx-large", "3x-large"]
_VOLUMES = [
    "1 fl oz (pack of 1)",
    "1.7 fl oz (pack of 1)",
    "2.5 fl oz",
    "3.4 fl oz (pack of 1)",
    "6.76 fl oz (pack of 1)",
    "8 fl oz (pack of 2)",
    "16 fl oz (pack of 1)",
]
_WEIGHTS = [
    "4 ounce (pack of 1)",
    "8 ounce (pack of 2)",
    "12 ounce (pack of 6)",
    "1 pound (pack of 1)",
    "16 ounce (pack of 4)",
    "2.5 pound (pack of 1)",
]
_COUNTS = ["1 count", "2 count", "6 count", "12 count", "24 count (pack of 2)", "50 count", "100 count"]
_PACKS = ["pack of 1", "pack of 2", "pack of 3", "pack of 4", "pack of 6"]
_SCENTS = ["lavender", "unscented", "vanilla", "citrus", "coconut", "eucalyptus mint", "rose", "sandalwood"]
_FLAVORS = ["chocolate", "vanilla", "strawberry", "sea salt", "original", "honey", "spicy", "cheddar", "mixed berry"]
_DEVICES = [
    "iphone 13",
    "iphone 14 pro",
    "iphone 15",
    "samsung galaxy s23",
    "samsung galaxy s24 ultra",
    "google pixel 8",
]
_CAPACITIES = ["32gb", "64gb", "128gb", "256gb", "512gb", "1tb"]
_BED_SIZES = ["twin", "full", "queen", "king", "california king"]
_ART_SIZES = ["8x10 inch", "12x16 inch", "16x20 inch", "20x28 inch", "24x36 inch", "36x48 inch"]
_LENGTHS = ["3 ft", "6 ft", "10 ft", "1 m", "2 m"]

# option name -> value pool
_OPTION_POOLS: dict[str, list[str]] = {
    "color": _COLORS,
    "finish": _FINISHES,
    "shade": _SHADES,
    "size": _APPAREL_SIZES,
    "volume": _VOLUMES,
    "weight": _WEIGHTS,
    "count": _COUNTS,
    "pack": _PACKS,
    "scent": _SCENTS,
    "flavor": _FLAVORS,
    "device": _DEVICES,
    "capacity": _CAPACITIES,
    "bed": _BED_SIZES,
    "art": _ART_SIZES,
    "length": _LENGTHS,
}
# Pool key -> the option name shown on the item page (WebShop pages show e.g. "size", "color",
# "flavor name", "style").
_OPTION_DISPLAY = {
    "color": "color",
    "finish": "color",
    "shade": "color",
    "size": "size",
    "volume": "size",
    "weight": "size",
    "count": "size",
    "pack": "item package quantity",
    "scent": "scent",
    "flavor": "flavor name",
    "device": "style",
    "capacity": "capacity",
    "bed": "size",
    "art": "size",
    "length": "size",
}


@dataclass(frozen=True)
class CategorySpec:
    """One task category of the built-in catalog: product types, attribute pool, options, prices."""

    label: str  # "Beauty & Personal Care – Fragrance"
    types: tuple[str, ...]  # product types; each also serves as the product's search "query"
    attributes: tuple[str, ...]  # attribute pool (WebShop-style short phrases)
    options: tuple[str, ...]  # keys of _OPTION_POOLS
    price_range: tuple[float, float]
    key: str  # the original's coarse "category" field (beauty, electronics, ...)


def _spec(label, types, attributes, options, low, high, key) -> CategorySpec:
    return CategorySpec(label, tuple(types), tuple(attributes), tuple(options), (float(low), float(high)), key)


_BEAUTY = "Beauty & Personal Care"
CATEGORY_SPECS: tuple[CategorySpec, ...] = (
    _spec(
        "Automotive – Motorcycle & Powersports",
        ["motorcycle helmet", "riding gloves", "motorcycle jacket", "handlebar grips", "motorcycle cover"],
        [
            "waterproof",
            "dot approved",
            "breathable",
            "easy install",
            "high visibility",
            "heavy duty",
            "universal fit",
            "reflective strips",
        ],
        ["color", "size"],
        15,
        280,
        "automotive",
    ),
    _spec(
        "Baby Products – Nursery",
        ["crib sheet", "baby blanket", "changing pad cover", "night light", "baby monitor"],
        [
            "organic cotton",
            "bpa free",
            "machine washable",
            "hypoallergenic",
            "non toxic",
            "soft material",
            "easy clean",
            "portable design",
        ],
        ["color", "pack"],
        9,
        150,
        "baby",
    ),
    _spec(
        f"{_BEAUTY} – Foot, Hand & Nail Care",
        ["nail polish", "foot cream", "cuticle oil", "nail file", "hand mask"],
        [
            "long lasting",
            "dry skin",
            "cruelty free",
            "non toxic",
            "quick dry",
            "natural ingredients",
            "easy apply",
            "paraben free",
        ],
        ["shade", "pack"],
        4,
        40,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Fragrance",
        ["eau de parfum", "eau de toilette", "body mist", "cologne", "perfume oil"],
        [
            "long lasting",
            "travel size",
            "alcohol free",
            "natural ingredients",
            "cruelty free",
            "fresh scent",
            "high quality",
            "gift set",
        ],
        ["volume", "scent"],
        14,
        150,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Hair Care",
        ["shampoo", "conditioner", "hair mask", "hair oil", "dry shampoo"],
        [
            "sulfate free",
            "dry hair",
            "natural hair",
            "hair growth",
            "paraben free",
            "color treated",
            "hair loss",
            "argan oil",
        ],
        ["volume", "scent"],
        6,
        60,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Makeup",
        ["lipstick", "foundation", "mascara", "eyeshadow palette", "concealer"],
        [
            "long lasting",
            "cruelty free",
            "easy apply",
            "waterproof",
            "highly pigmented",
            "paraben free",
            "natural look",
            "vegan formula",
        ],
        ["shade"],
        5,
        60,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Oral Care",
        ["toothpaste", "electric toothbrush", "water flosser", "tongue cleaner", "mouthwash"],
        [
            "fluoride free",
            "bad breath",
            "sensitive teeth",
            "bpa free",
            "easy clean",
            "teeth whitening",
            "travel size",
            "storage case",
        ],
        ["color", "pack"],
        4,
        120,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Personal Care",
        ["deodorant", "body wash", "hand sanitizer", "lip balm", "cotton swabs"],
        [
            "aluminum free",
            "sensitive skin",
            "cruelty free",
            "eco friendly",
            "natural ingredients",
            "anti perspirant",
            "travel size",
            "dermatologist tested",
        ],
        ["scent", "volume"],
        3,
        30,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Shave & Hair Removal",
        ["safety razor", "shaving cream", "beard trimmer", "wax kit", "aftershave balm"],
        [
            "sensitive skin",
            "cordless",
            "stainless steel",
            "easy clean",
            "rechargeable battery",
            "long lasting",
            "travel size",
            "water resistant",
        ],
        ["color", "pack"],
        5,
        90,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Skin Care",
        ["face moisturizer", "vitamin c serum", "sunscreen", "face cleanser", "eye cream"],
        [
            "fine lines",
            "dry skin",
            "hyaluronic acid",
            "oil free",
            "fragrance free",
            "clinically proven",
            "dark circles",
            "sensitive skin",
        ],
        ["volume"],
        8,
        80,
        "beauty",
    ),
    _spec(
        f"{_BEAUTY} – Tools & Accessories",
        ["makeup brush set", "hair straightener", "makeup mirror", "hair dryer", "travel bottles"],
        [
            "easy carry",
            "high quality",
            "leak proof",
            "travel size",
            "easy clean",
            "led light",
            "ceramic tourmaline",
            "bpa free",
        ],
        ["color"],
        8,
        120,
        "beauty",
    ),
    _spec(
        "Cell Phones & Accessories – Accessories",
        ["phone charger", "screen protector", "car phone mount", "charging cable", "power bank"],
        [
            "fast charging",
            "tempered glass",
            "easy install",
            "wireless charging",
            "compact size",
            "braided nylon",
            "one hand operation",
            "high capacity",
        ],
        ["color", "length"],
        7,
        50,
        "electronics",
    ),
    _spec(
        "Cell Phones & Accessories – Cases, Holsters & Sleeves",
        ["phone case", "wallet case", "laptop sleeve", "belt holster", "tablet case"],
        [
            "shockproof",
            "slim fit",
            "wireless charging",
            "card holder",
            "drop protection",
            "water resistant",
            "kickstand",
            "scratch resistant",
        ],
        ["color", "device"],
        8,
        45,
        "electronics",
    ),
    _spec(
        "Clothing, Shoes & Jewelry – Men",
        ["t-shirt", "dress shirt", "jeans", "hoodie", "polo shirt", "chino pants"],
        [
            "machine wash",
            "long sleeve",
            "slim fit",
            "button down",
            "cotton spandex",
            "regular fit",
            "relaxed fit",
            "short sleeve",
        ],
        ["color", "size"],
        12,
        70,
        "fashion",
    ),
    _spec(
        "Clothing, Shoes & Jewelry – Novelty & More",
        ["graphic t-shirt", "novelty socks", "halloween costume", "baseball cap", "christmas sweater"],
        [
            "classic fit",
            "cotton heather",
            "needle sleeve",
            "lightweight",
            "machine wash",
            "unisex design",
            "twill tape",
            "double needle",
        ],
        ["color", "size"],
        10,
        45,
        "fashion",
    ),
    _spec(
        "Clothing, Shoes & Jewelry – Sport Specific Clothing",
        ["running shorts", "yoga pants", "compression shirt", "cycling jersey", "swim trunks"],
        [
            "quick dry",
            "moisture wicking",
            "high waist",
            "tummy control",
            "four way stretch",
            "breathable",
            "elastic waistband",
            "zipper pocket",
        ],
        ["color", "size"],
        14,
        60,
        "fashion",
    ),
    _spec(
        "Clothing, Shoes & Jewelry – Women",
        ["summer dress", "blouse", "leggings", "cardigan", "maxi skirt"],
        [
            "high waist",
            "short sleeve",
            "long sleeve",
            "machine wash",
            "loose fit",
            "soft material",
            "button closure",
            "v neck",
        ],
        ["color", "size"],
        15,
        80,
        "fashion",
    ),
    _spec(
        "Electronics – Accessories & Supplies",
        ["hdmi cable", "surge protector", "aa batteries", "usb hub", "tv wall mount"],
        [
            "high speed",
            "gold plated",
            "heavy duty",
            "easy install",
            "plug play",
            "usb port",
            "long lasting",
            "fast charging",
        ],
        ["length", "pack"],
        7,
        80,
        "electronics",
    ),
    _spec(
        "Electronics – Camera & Photo",
        ["tripod", "camera bag", "memory card", "ring light", "camera lens"],
        [
            "lightweight",
            "easy carry",
            "high speed",
            "carbon fiber",
            "quick release",
            "water resistant",
            "optical zoom",
            "ultra hd",
        ],
        ["color", "capacity"],
        15,
        400,
        "electronics",
    ),
    _spec(
        "Electronics – Car & Vehicle Electronics",
        ["dash cam", "car stereo", "backup camera", "fm transmitter", "car charger"],
        [
            "night vision",
            "easy install",
            "wide angle",
            "hands free",
            "loop recording",
            "fast charging",
            "bluetooth connectivity",
            "plug play",
        ],
        ["color"],
        15,
        250,
        "electronics",
    ),
    _spec(
        "Electronics – Computers & Accessories",
        ["wireless mouse", "mechanical keyboard", "laptop stand", "external hard drive", "gaming monitor"],
        [
            "ergonomic design",
            "wireless bluetooth",
            "usb port",
            "high performance",
            "plug play",
            "quad core",
            "backlit keys",
            "aluminum alloy",
        ],
        ["color", "capacity"],
        15,
        600,
        "electronics",
    ),
    _spec(
        "Electronics – Home Audio",
        ["soundbar", "bookshelf speakers", "subwoofer", "stereo receiver", "turntable"],
        [
            "wireless bluetooth",
            "surround sound",
            "easy setup",
            "remote control",
            "optical input",
            "stereo sound",
            "wall mount",
            "high fidelity",
        ],
        ["color"],
        50,
        600,
        "electronics",
    ),
    _spec(
        "Electronics – Portable Audio & Video",
        ["bluetooth speaker", "wireless earbuds", "over ear headphones", "portable radio", "mp3 player"],
        [
            "noise cancelling",
            "waterproof",
            "long battery",
            "hands free",
            "wireless bluetooth",
            "stereo sound",
            "fast charging",
            "portable design",
        ],
        ["color"],
        15,
        300,
        "electronics",
    ),
    _spec(
        "Grocery & Gourmet Food – Deli & Prepared Foods",
        ["smoked salmon", "sliced salami", "hummus", "ready meal", "tuna salad kit"],
        [
            "ready eat",
            "gluten free",
            "high protein",
            "keto friendly",
            "low carb",
            "non gmo",
            "shelf stable",
            "natural ingredients",
        ],
        ["flavor", "weight"],
        5,
        60,
        "food",
    ),
    _spec(
        "Grocery & Gourmet Food – Frozen",
        ["frozen pizza", "ice cream", "frozen vegetables", "frozen dumplings", "frozen waffles"],
        [
            "gluten free",
            "plant based",
            "dairy free",
            "non gmo",
            "low calorie",
            "keto friendly",
            "usda organic",
            "family size",
        ],
        ["flavor", "weight"],
        4,
        40,
        "food",
    ),
    _spec(
        "Grocery & Gourmet Food – Produce",
        ["avocados", "organic apples", "baby spinach", "sweet potatoes", "fresh basil"],
        [
            "usda organic",
            "non gmo",
            "locally grown",
            "ready eat",
            "pesticide free",
            "triple washed",
            "farm fresh",
            "hand picked",
        ],
        ["weight"],
        3,
        30,
        "food",
    ),
    _spec(
        "Grocery & Gourmet Food – Snacks & Sweets",
        ["potato chips", "chocolate bar", "protein bar", "gummy candy", "trail mix"],
        [
            "gluten free",
            "low sugar",
            "high protein",
            "individually wrapped",
            "non gmo",
            "keto friendly",
            "kosher certified",
            "vegan friendly",
        ],
        ["flavor", "count"],
        3,
        40,
        "food",
    ),
    _spec(
        "Home & Kitchen – Bedding",
        ["comforter set", "bed sheet set", "bed pillow", "duvet cover", "weighted blanket"],
        [
            "machine washable",
            "hypoallergenic",
            "deep pocket",
            "breathable",
            "cooling fabric",
            "soft microfiber",
            "wrinkle free",
            "all season",
        ],
        ["color", "bed"],
        20,
        150,
        "garden",
    ),
    _spec(
        "Home & Kitchen – Furniture",
        ["nightstand", "bookshelf", "coffee table", "tv stand", "accent chair"],
        [
            "easy assemble",
            "solid wood",
            "storage space",
            "living room",
            "mid century",
            "engineered wood",
            "space saving",
            "with drawers",
        ],
        ["color"],
        40,
        400,
        "garden",
    ),
    _spec(
        "Home & Kitchen – Home Décor Products",
        ["throw pillow cover", "blackout curtains", "area rug", "artificial plant", "scented candle"],
        [
            "living room",
            "easy clean",
            "machine washable",
            "thermal insulated",
            "decorative design",
            "non slip",
            "handmade",
            "soy wax",
        ],
        ["color", "art"],
        10,
        120,
        "garden",
    ),
    _spec(
        "Home & Kitchen – Kitchen & Dining",
        ["coffee mug", "chef knife", "frying pan", "food storage containers", "water bottle"],
        [
            "dishwasher safe",
            "bpa free",
            "stainless steel",
            "non stick",
            "leak proof",
            "easy clean",
            "microwave safe",
            "heat resistant",
        ],
        ["color", "pack"],
        8,
        120,
        "garden",
    ),
    _spec(
        "Home & Kitchen – Wall Art",
        ["canvas wall art", "framed print", "poster", "metal wall sign", "wall decal"],
        [
            "ready hang",
            "living room",
            "hd print",
            "wood frame",
            "easy install",
            "bedroom decor",
            "waterproof",
            "modern style",
        ],
        ["art"],
        10,
        150,
        "garden",
    ),
    _spec(
        "Office Products – Office & School Supplies",
        ["gel pens", "spiral notebook", "sticky notes", "desk organizer", "stapler"],
        [
            "quick dry",
            "smooth writing",
            "acid free",
            "heavy duty",
            "assorted colors",
            "refillable",
            "easy use",
            "college ruled",
        ],
        ["color", "count"],
        4,
        40,
        "office",
    ),
    _spec(
        "Office Products – Office Furniture & Lighting",
        ["desk lamp", "office chair", "standing desk", "filing cabinet", "floor lamp"],
        [
            "adjustable height",
            "lumbar support",
            "easy assemble",
            "dimmable",
            "eye protection",
            "heavy duty",
            "usb port",
            "ergonomic design",
        ],
        ["color"],
        30,
        400,
        "office",
    ),
    _spec(
        "Sports & Outdoors – Sports",
        ["yoga mat", "dumbbells", "resistance bands", "basketball", "tennis racket"],
        [
            "non slip",
            "eco friendly",
            "high density",
            "lightweight",
            "anti slip",
            "durable construction",
            "adjustable",
            "carrying strap",
        ],
        ["color"],
        10,
        200,
        "sports",
    ),
    _spec(
        "Tools & Home Improvement – Lighting & Ceiling Fans",
        ["ceiling fan", "led bulb", "pendant light", "wall sconce", "chandelier"],
        [
            "dimmable",
            "energy efficient",
            "easy install",
            "remote control",
            "warm white",
            "living room",
            "damp rated",
            "glass shade",
        ],
        ["finish", "pack"],
        15,
        300,
        "garden",
    ),
)
WEBSHOP_CATEGORIES: tuple[str, ...] = tuple(spec.label for spec in CATEGORY_SPECS)

_BRAND_HEADS = [
    "Lu",
    "Ve",
    "Mar",
    "Ko",
    "Sol",
    "Ari",
    "Bel",
    "Cor",
    "Dan",
    "El",
    "Fen",
    "Gra",
    "Hal",
    "Iso",
    "Jun",
    "Kai",
    "Lor",
    "Mio",
    "Nor",
    "Ost",
    "Pra",
    "Qui",
    "Ros",
    "Sev",
    "Tor",
    "Ula",
]
_BRAND_TAILS = ["mira", "vo", "den", "ska", "trix", "lane", "nova", "bury", "tec", "ora", "well", "crest"]
VARIANT_RATE = 0.4  # share of built-in products generated as a variant of an earlier one of the same type
_SELLING_POINTS = ["Premium", "Classic", "Everyday", "Professional", "Deluxe", "Essential", "Ultra", "Original"]


@dataclass
class Product:
    """One catalog item (what WebShop's engine keeps per product after loading)."""

    asin: str
    title: str
    category: str  # two-level task category label (BOOST table 4 style)
    product_category: str  # breadcrumb joined with " › " (used by the type reward)
    query: str  # the search query the product was scraped under (used by the type reward)
    attributes: list[str]
    options: dict[str, list[str]]  # option name -> lower-case values, in page order
    pricing: list[float]  # one price, or [low, high]
    price: float  # the price the reward compares with the goal's ceiling
    description: str = ""
    bullet_points: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    rating: str = "N.A."
    coarse_category: str = ""  # the original's "category" field (beauty, fashion, ...)
    product_type: str = ""  # built-in catalog only: the product type the title names

    @property
    def price_tag(self) -> str:
        # Same rendering as the original engine: "$12.99" or "$10.5 to $15.0" (Python float repr).
        if len(self.pricing) == 1:
            return f"${self.pricing[0]}"
        return f"${self.pricing[0]} to ${self.pricing[1]}"


@dataclass
class Catalog:
    products: list[Product]
    source: str = "builtin"

    def __post_init__(self):
        self.by_asin: dict[str, Product] = {}
        for product in self.products:
            if product.asin in self.by_asin:
                raise ValueError(f"duplicate asin {product.asin!r} in the {self.source} catalog")
            self.by_asin[product.asin] = product

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, asin: str) -> Product:
        return self.by_asin[asin.upper()]

    def __contains__(self, asin: str) -> bool:
        return asin.upper() in self.by_asin


# --------------------------------------------------------------------------- built-in catalog


def _asin(rng: random.Random, taken: set[str]) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    while True:
        asin = "B0" + "".join(rng.choice(alphabet) for _ in range(8))
        if asin not in taken:
            taken.add(asin)
            return asin


_SMALL_WORDS = frozenset({"of", "and", "for", "with", "de", "in"})


def _title_case(text: str) -> str:
    words = []
    for position, word in enumerate(text.split()):
        if position and word in _SMALL_WORDS:
            words.append(word)
            continue
        letter = next((i for i, c in enumerate(word) if c.isalpha()), None)
        if letter is None or any(c.isdigit() for c in word):
            words.append(word)
        else:
            words.append(word[:letter] + word[letter].upper() + word[letter + 1 :])
    return " ".join(words)


def _price(rng: random.Random, low: float, high: float) -> float:
    # Log-uniform between the category's bounds, ending in .99/.49/.95/.00 like shop prices.
    value = low * (high / low) ** rng.random()
    cents = rng.choice([0.99, 0.49, 0.95, 0.0])
    return round(max(1.0, int(value) + cents), 2)


def _make_product(
    rng: random.Random,
    spec: CategorySpec,
    product_type: str,
    asin: str,
    brands: list[str],
    base: Product | None = None,
) -> Product:
    if base is None:
        brand = rng.choice(brands)
        attributes = rng.sample(list(spec.attributes), rng.randint(3, 5))
    else:
        # A variant listing of ``base`` (same brand and type, one attribute swapped): shops list
        # many near-duplicates, and telling them apart is what makes reading pages worth it.
        brand = base.title.split()[0]
        attributes = list(base.attributes)
        unused = [a for a in spec.attributes if a not in attributes]
        if unused:
            attributes[rng.randrange(len(attributes))] = rng.choice(unused)
    options: dict[str, list[str]] = {}
    for key in spec.options:
        # A few products have no choice for an option type, like many real listings.
        if rng.random() < 0.15:
            continue
        pool = _OPTION_POOLS[key]
        values = rng.sample(pool, rng.randint(2, min(5, len(pool))))
        values.sort(key=pool.index)  # page order follows the pool (sizes ascending etc.)
        options.setdefault(_OPTION_DISPLAY[key], values)
    # The title names the brand, the product type and one or two of its attributes; the remaining
    # attributes appear only in features / description, so reading the page matters.
    in_title = attributes[: rng.randint(1, 2)]
    tail_option = ""
    if options and rng.random() < 0.5:
        name, values = next(iter(options.items()))
        tail_option = f", {_title_case(values[0])}"
    selling_point = rng.choice(_SELLING_POINTS)
    title = f"{brand} {selling_point} {_title_case(' '.join(in_title))} {_title_case(product_type)}{tail_option}"
    low, high = spec.price_range
    price = _price(rng, low, high)
    if rng.random() < 0.1:  # a price range, as some original listings have
        pricing = [price, int(price * rng.uniform(1.1, 1.6)) + 0.99]
        price = round(rng.uniform(pricing[0], pricing[1]), 2)
    else:
        pricing = [price]
    domain, sub = spec.label.split(CATEGORY_SEPARATOR)
    features = [f"{attribute.upper()}: this {product_type} is {attribute}." for attribute in attributes]
    features.append(f"WHAT YOU GET: {brand} {product_type} and a hassle-free 30-day return policy.")
    description = (
        f"The {brand} {product_type} is made for everyday use. "
        f"{' '.join(f'It is {a}.' for a in attributes[1:])} Backed by {brand} customer service."
    )
    reviews = []
    for _ in range(rng.randint(0, 2)):
        score = rng.randint(3, 5)
        reviews.append(
            {
                "title": rng.choice(["Works as described", "Great value", "Would buy again", "Decent quality"]),
                "score": score,
                "body": f"I bought this {product_type} a month ago. "
                + rng.choice(["Happy with it.", "Does the job.", "Good for the price."]),
            }
        )
    rating = f"{sum(r['score'] for r in reviews) / len(reviews):.1f}" if reviews else "N.A."
    return Product(
        asin=asin,
        title=title,
        category=spec.label,
        product_category=f"{domain} › {sub} › {_title_case(product_type)}",
        query=product_type,
        attributes=attributes,
        options=options,
        pricing=pricing,
        price=price,
        description=description,
        bullet_points=features,
        reviews=reviews,
        rating=rating,
        coarse_category=spec.key,
        product_type=product_type,
    )


@lru_cache(maxsize=8)
def build_catalog(num_products: int = 3000, seed: int = 0) -> Catalog:
    """A deterministic catalog of ``num_products`` items spread evenly over the task categories.

    The same ``(num_products, seed)`` always gives the same products, in the same order (results
    are cached per process: treat the returned catalog as read-only).
    """
    if num_products < len(CATEGORY_SPECS):
        raise ValueError(
            f"num_products={num_products} is too small: the built-in catalog needs at least one product "
            f"per category ({len(CATEGORY_SPECS)})"
        )
    rng = random.Random(f"webshop-catalog-{seed}")
    brands = sorted({head + tail for head in _BRAND_HEADS for tail in _BRAND_TAILS})
    brands = rng.sample(brands, 120)
    taken: set[str] = set()
    products = []
    by_type: dict[tuple[str, str], list[Product]] = {}
    for index in range(num_products):
        spec = CATEGORY_SPECS[index % len(CATEGORY_SPECS)]
        product_type = spec.types[(index // len(CATEGORY_SPECS)) % len(spec.types)]
        siblings = by_type.setdefault((spec.label, product_type), [])
        base = rng.choice(siblings) if siblings and rng.random() < VARIANT_RATE else None
        product = _make_product(rng, spec, product_type, _asin(rng, taken), brands, base)
        siblings.append(product)
        products.append(product)
    return Catalog(products, source="builtin")


# --------------------------------------------------------------------------- original files


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WebShop {what} file not found: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"WebShop {what} file {path} is not valid JSON: {error}") from error


def parse_pricing(pricing: Any) -> list[float]:
    """The original's pricing rule: ``"$12.99"`` -> [12.99]; ``"$10.00 - $15.50"`` -> [10.0, 15.5]; empty -> [100.0]."""
    if not pricing:
        return [100.0]
    if isinstance(pricing, (int, float)):
        return [float(pricing)]
    if isinstance(pricing, list):
        return [float(p) for p in pricing[:2]] or [100.0]
    values = []
    for piece in str(pricing).split("$")[1:]:
        digits = re.sub(r"[^\d.]", "", piece)
        try:
            values.append(float(Decimal(digits)))
        except InvalidOperation:
            continue
    return values[:2] or [100.0]


def category_label(product_category: str) -> str:
    """Two-level task label from a breadcrumb: ``"A › B › C"`` -> ``"A – B"`` (BOOST appendix E.3)."""
    levels = [level.strip() for level in product_category.split("›") if level.strip()]
    return CATEGORY_SEPARATOR.join(levels[:2]) if levels else "unknown"


def load_catalog(
    product_file: str | Path,
    attribute_file: str | Path | None = None,
    *,
    num_products: int | None = None,
    seed: int = 0,
) -> tuple[Catalog, dict[str, dict[str, Any]]]:
    """Load ``items_shuffle*.json`` (+ ``items_ins_v2*.json``) the way WebShop's engine does.

    Returns the catalog and the attribute file's entries (asin -> {attributes, instruction,
    instruction_attributes}), which :func:`~trainers.envs.webshop.goals.goals_from_attribute_file`
    turns into goals. Products with asin ``"nan"``, asins longer than 10 characters or repeated
    asins are skipped, as in the original. A product whose price is a range gets a price drawn
    uniformly inside it, from ``seed`` (the original draws it unseeded).
    """
    raw = _read_json(product_file, "product")
    if not isinstance(raw, list):
        raise ValueError(
            f"WebShop product file {product_file} must hold a JSON list of products, got {type(raw).__name__}"
        )
    attributes: dict[str, dict[str, Any]] = {}
    if attribute_file is not None:
        attributes = _read_json(attribute_file, "attribute")
        if not isinstance(attributes, dict):
            raise ValueError(
                f"WebShop attribute file {attribute_file} must map asin -> entry, got {type(attributes).__name__}"
            )
    if num_products is not None:
        raw = raw[:num_products]
    rng = random.Random(f"webshop-prices-{seed}")
    products: list[Product] = []
    seen: set[str] = set()
    required = ("asin", "name", "product_category", "query")
    # the full product file has 1.18M items: show progress on anything that large
    progress = tqdm(raw, desc="loading WebShop products", unit="item", disable=len(raw) < 20_000)
    for index, item in enumerate(progress):
        if not isinstance(item, dict):
            raise ValueError(
                f"WebShop product file {product_file}, item {index}: expected an object, got {type(item).__name__}"
            )
        missing = [key for key in required if key not in item]
        if missing:
            raise ValueError(
                f"WebShop product file {product_file}, item {index}: missing field(s) {', '.join(missing)}"
            )
        asin = str(item["asin"])
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        pricing = parse_pricing(item.get("pricing"))
        price = pricing[0] if len(pricing) == 1 else rng.uniform(pricing[0], pricing[1])
        options: dict[str, list[str]] = {}
        for name, contents in (item.get("customization_options") or {}).items():
            if contents is None:
                continue
            options[name.lower()] = [str(c["value"]).strip().replace("/", " | ").lower() for c in contents]
        bullets = item.get("small_description") or []
        bullets = bullets if isinstance(bullets, list) else [bullets]
        entry = attributes.get(asin, {})
        # the original keeps an entry's list even when empty; DUMMY_ATTR only when there is no entry
        product_attributes = entry.get("attributes") if isinstance(entry, dict) and "attributes" in entry else None
        products.append(
            Product(
                asin=asin,
                title=item["name"],
                category=category_label(item["product_category"]),
                product_category=item["product_category"],
                query=str(item["query"]).lower().strip(),
                attributes=list(product_attributes) if product_attributes is not None else ["DUMMY_ATTR"],
                options=options,
                pricing=pricing,
                price=price,
                description=item.get("full_description") or "",
                # the original reads ratings from a separate reviews file; without it every page says N.A.
                bullet_points=[str(b) for b in bullets],
                rating="N.A.",
                coarse_category=str(item.get("category", "")),
            )
        )
    if not products:
        raise ValueError(f"WebShop product file {product_file} holds no usable product")
    return Catalog(products, source=str(product_file)), attributes


__all__ = [
    "CATEGORY_SPECS",
    "Catalog",
    "CategorySpec",
    "Product",
    "WEBSHOP_CATEGORIES",
    "build_catalog",
    "category_label",
    "load_catalog",
    "parse_pricing",
]
