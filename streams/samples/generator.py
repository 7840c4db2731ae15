"""A seeded synthetic product catalogue, with ground-truth "intent" labels for simulations.

:func:`generate_catalogue` builds ``n`` products over a fixed taxonomy (:data:`TAXONOMY`: 10 root categories
with 5-8 subcategories each; every subcategory has its own product types, price range, materials and size
scale, every root its own fictional brands). Titles and descriptions are assembled from that vocabulary plus
adjectives, colour, material and size. Prices are log-normal per subcategory, scaled by a per-brand price tier.

Determinism: products are drawn in blocks of :data:`BLOCK` from a ``random.Random`` seeded with a BLAKE2b
hash of ``(seed, block)``, so the same arguments always give the same catalogue (independent of ``hash()``
randomisation and platform), and ``generate_catalogue(m, seed=s)`` is a prefix of
``generate_catalogue(n, seed=s)`` for ``m <= n``.

Ground truth: :func:`product_topics` returns the product's hidden intent labels, e.g.
``{"root:shoes", "category:shoes/running shoes", "type:trail running shoe", "brand:stridewell",
"colour:red", "material:mesh", "size:eu 42"}``. They are read from the structured fields (category path,
brand and the ``product_type``/``colour``/``material``/``size`` attributes), never from the text. The
title names the colour only most of the time and the material about half of the time (the description
states both), so title-only matching is imperfect on purpose. A simulator draws a query intent as a small
subset of some product's topics, writes a query from it, and judges a result relevant when
:func:`is_relevant` holds (the intent is a subset of the result's topics).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import itertools
import math
import operator
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas.catalogue import CatalogueUpdate

__all__ = [
    "BLOCK",
    "BRANDS",
    "COLOURS",
    "SIZES",
    "TAXONOMY",
    "TOPIC_KINDS",
    "UPDATED_AT",
    "Subcategory",
    "generate_catalogue",
    "is_relevant",
    "product_topics",
]

#: ``updated_at`` of every generated product (2026-01-01T00:00:00Z, epoch ms).
UPDATED_AT = 1_767_225_600_000

#: Products drawn from one random stream (see the module docstring on determinism).
BLOCK = 256

#: Prefixes of the labels :func:`product_topics` returns, most general first.
TOPIC_KINDS: tuple[str, ...] = ("root", "category", "type", "brand", "colour", "material", "size")


@dataclass(frozen=True, slots=True)
class Subcategory:
    """One leaf of the taxonomy and the vocabulary its products are built from."""

    name: str
    #: Product types (singular nouns) sold here; the last word is usually the head noun.
    types: tuple[str, ...]
    #: Median price in USD, and the log-normal sigma around it.
    median_price: float
    sigma: float
    #: Materials (or, for food and cosmetics, a defining ingredient/variant); empty when not applicable.
    materials: tuple[str, ...] = ()
    #: Whether products come in a colour.
    coloured: bool = True
    #: Size scale, from :data:`SIZES`; empty when products have no size.
    sizes: str = ""
    #: Exactly three selling points, used in descriptions.
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.features) != 3 or not self.types or (self.sizes and self.sizes not in SIZES):
            raise ValueError(f"subcategory {self.name!r}: needs 3 features, some types and a known size scale")


_APPAREL = ("cotton", "organic cotton", "linen", "wool", "merino wool", "polyester", "denim", "fleece", "viscose")
_TECH = ("aluminium", "plastic", "glass", "carbon fibre")

SIZES: dict[str, tuple[str, ...]] = {
    "apparel": ("XS", "S", "M", "L", "XL", "XXL"),
    "shoe": tuple(f"EU {s}" for s in range(36, 47)),
    "bed": ("Single", "Double", "Queen", "King"),
    "volume": ("50 ml", "100 ml", "200 ml", "500 ml"),
    "weight": ("250 g", "500 g", "1 kg"),
    "storage": ("64 GB", "128 GB", "256 GB", "512 GB", "1 TB"),
    "screen": ("11 inch", "13 inch", "14 inch", "15 inch", "16 inch"),
    "kids": ("3+", "6+", "8+", "12+"),
    "cookware": ("16 cm", "20 cm", "24 cm", "28 cm"),
}

#: Colour names a product can have (lower case; titles capitalise them).
COLOURS: tuple[str, ...] = (
    "black", "white", "grey", "navy", "blue", "red", "green", "olive", "beige", "brown",
    "pink", "purple", "yellow", "orange", "silver", "gold",
)  # fmt: skip

# fmt: off
#: Root category -> its subcategories. 10 roots, 5-8 subcategories each.
TAXONOMY: dict[str, tuple[Subcategory, ...]] = {
    "Clothing": (
        Subcategory("T-Shirts & Tops", ("t-shirt", "polo shirt", "tank top", "long sleeve top"), 22, 0.35,
                    _APPAREL, True, "apparel", ("breathable fabric", "a relaxed fit", "reinforced seams")),
        Subcategory("Jeans & Trousers", ("jeans", "chinos", "trousers", "joggers", "cargo pants"), 55, 0.4,
                    ("denim", "cotton", "linen", "stretch cotton", "corduroy"), True, "apparel",
                    ("a comfortable stretch", "deep pockets", "a tapered leg")),
        Subcategory("Dresses & Skirts", ("dress", "maxi dress", "midi skirt", "wrap dress", "pleated skirt"), 60, 0.45,
                    ("cotton", "linen", "viscose", "silk", "chiffon"), True, "apparel",
                    ("a flattering cut", "a lined finish", "an adjustable waist")),
        Subcategory("Jackets & Coats", ("jacket", "parka", "raincoat", "blazer", "puffer jacket", "trench coat"),
                    120, 0.5, ("wool", "down", "nylon", "leather", "waxed cotton", "polyester"), True, "apparel",
                    ("a water-repellent shell", "a warm lining", "a detachable hood")),
        Subcategory("Knitwear", ("sweater", "cardigan", "hoodie", "turtleneck", "sweatshirt"), 50, 0.45,
                    ("wool", "merino wool", "cashmere", "cotton", "fleece"), True, "apparel",
                    ("a soft hand feel", "ribbed cuffs", "a cosy knit")),
        Subcategory("Activewear", ("leggings", "running shorts", "sports bra", "track jacket", "training top"),
                    35, 0.4, ("polyester", "nylon", "elastane", "recycled polyester"), True, "apparel",
                    ("moisture-wicking fabric", "four-way stretch", "reflective details")),
        Subcategory("Socks & Underwear", ("socks", "boxer briefs", "pyjamas", "briefs", "thermal top"), 15, 0.4,
                    ("cotton", "bamboo", "merino wool", "modal"), True, "apparel",
                    ("a soft waistband", "flat seams", "all-day comfort")),
    ),
    "Shoes": (
        Subcategory("Running Shoes", ("running shoe", "trail running shoe", "racing flat", "road running shoe"),
                    110, 0.35, ("mesh", "knit", "synthetic"), True, "shoe",
                    ("responsive cushioning", "a grippy outsole", "a breathable upper")),
        Subcategory("Sneakers", ("sneaker", "high-top sneaker", "slip-on sneaker", "court shoe"), 80, 0.4,
                    ("leather", "canvas", "suede", "synthetic"), True, "shoe",
                    ("a cushioned footbed", "a vulcanised sole", "everyday comfort")),
        Subcategory("Boots", ("ankle boot", "hiking boot", "chelsea boot", "winter boot", "work boot"), 130, 0.4,
                    ("leather", "suede", "nubuck", "rubber"), True, "shoe",
                    ("a waterproof membrane", "a lug sole", "a padded collar")),
        Subcategory("Sandals", ("sandal", "flip-flop", "slide", "espadrille"), 40, 0.45,
                    ("leather", "rubber", "cork", "canvas"), True, "shoe",
                    ("a contoured footbed", "adjustable straps", "a lightweight sole")),
        Subcategory("Formal Shoes", ("oxford shoe", "loafer", "derby shoe", "pump", "brogue"), 120, 0.4,
                    ("leather", "patent leather", "suede"), True, "shoe",
                    ("a Goodyear-welted sole", "a polished finish", "a leather lining")),
        Subcategory("Slippers", ("slipper", "moccasin slipper", "slipper boot"), 30, 0.35,
                    ("wool", "fleece", "sheepskin", "felt"), True, "shoe",
                    ("a memory foam insole", "a non-slip sole", "a warm lining")),
    ),
    "Electronics": (
        Subcategory("Headphones", ("wireless headphones", "earbuds", "noise cancelling headphones",
                                   "gaming headset", "sport earbuds"), 90, 0.6, ("plastic", "aluminium"), True, "",
                    ("active noise cancellation", "30 hours of battery life", "a built-in microphone")),
        Subcategory("Smartphones", ("smartphone", "5G smartphone", "rugged phone", "flip phone"), 450, 0.6,
                    _TECH, True, "storage", ("a triple camera", "an OLED display", "fast charging")),
        Subcategory("Laptops", ("laptop", "ultrabook", "gaming laptop", "2-in-1 laptop", "chromebook"), 900, 0.5,
                    ("aluminium", "plastic", "magnesium alloy"), True, "screen",
                    ("an all-day battery", "a backlit keyboard", "a fast SSD")),
        Subcategory("Tablets", ("tablet", "e-reader", "drawing tablet", "kids tablet"), 300, 0.6,
                    ("aluminium", "plastic"), True, "storage",
                    ("a high-resolution screen", "stylus support", "a slim design")),
        Subcategory("Smartwatches", ("smartwatch", "fitness tracker", "GPS watch", "kids smartwatch"), 180, 0.55,
                    ("aluminium", "stainless steel", "titanium", "silicone"), True, "",
                    ("heart-rate tracking", "built-in GPS", "a week of battery life")),
        Subcategory("Speakers", ("bluetooth speaker", "smart speaker", "soundbar", "portable speaker"), 120, 0.6,
                    ("fabric", "plastic", "aluminium", "wood"), True, "",
                    ("deep bass", "a waterproof body", "multi-room pairing")),
        Subcategory("Cameras", ("mirrorless camera", "action camera", "instant camera", "webcam", "dashcam"), 350,
                    0.8, ("plastic", "magnesium alloy"), True, "",
                    ("4K video", "image stabilisation", "a fast autofocus")),
        Subcategory("Chargers & Cables", ("usb-c cable", "wall charger", "power bank", "wireless charger",
                                          "charging dock"), 20, 0.5, ("braided nylon", "plastic", "aluminium"),
                    True, "", ("fast charging", "a tangle-free cable", "overcharge protection")),
    ),
    "Home & Kitchen": (
        Subcategory("Cookware", ("frying pan", "saucepan", "stock pot", "wok", "casserole dish", "skillet"), 45,
                    0.5, ("stainless steel", "cast iron", "non-stick aluminium", "copper", "carbon steel"), True,
                    "cookware", ("even heat distribution", "an oven-safe handle", "induction compatibility")),
        Subcategory("Kitchen Appliances", ("blender", "coffee machine", "toaster", "kettle", "air fryer",
                                           "stand mixer"), 90, 0.6, ("stainless steel", "plastic", "glass"), True,
                    "", ("one-touch controls", "dishwasher-safe parts", "an auto shut-off")),
        Subcategory("Tableware", ("dinner plate set", "mug", "wine glass set", "serving bowl", "cutlery set"), 30,
                    0.5, ("porcelain", "stoneware", "glass", "stainless steel", "bamboo"), True, "",
                    ("a dishwasher-safe glaze", "a timeless design", "stackable pieces")),
        Subcategory("Bedding", ("duvet cover", "fitted sheet", "pillow", "duvet", "throw blanket"), 50, 0.5,
                    ("cotton", "linen", "sateen", "microfibre", "bamboo"), True, "bed",
                    ("a breathable weave", "hidden zip closure", "a soft brushed finish")),
        Subcategory("Bath", ("bath towel", "bath mat", "shower curtain", "bathrobe", "towel set"), 25, 0.45,
                    ("cotton", "bamboo", "microfibre", "waffle cotton"), True, "",
                    ("high absorbency", "quick-drying fibres", "a plush feel")),
        Subcategory("Storage", ("storage box", "laundry basket", "shoe rack", "food container set", "drawer organiser"),
                    20, 0.5, ("plastic", "wicker", "bamboo", "metal", "fabric"), True, "",
                    ("stackable design", "a space-saving shape", "a lid that seals")),
        Subcategory("Lighting", ("table lamp", "floor lamp", "pendant light", "led strip", "desk lamp"), 55, 0.55,
                    ("metal", "glass", "rattan", "ceramic", "wood"), True, "",
                    ("dimmable light", "a warm white glow", "an energy-saving LED")),
    ),
    "Furniture": (
        Subcategory("Sofas", ("sofa", "corner sofa", "sofa bed", "loveseat", "armchair"), 650, 0.5,
                    ("velvet", "linen", "leather", "boucle", "chenille"), True, "",
                    ("deep seat cushions", "removable covers", "solid wood legs")),
        Subcategory("Chairs", ("dining chair", "office chair", "lounge chair", "bar stool", "rocking chair"), 120, 0.6,
                    ("oak", "walnut", "metal", "plastic", "rattan", "velvet"), True, "",
                    ("an ergonomic backrest", "a sturdy frame", "stackable design")),
        Subcategory("Tables", ("dining table", "coffee table", "side table", "console table", "extendable table"),
                    250, 0.6, ("oak", "walnut", "pine", "marble", "glass", "metal"), True, "",
                    ("a scratch-resistant top", "easy assembly", "a solid build")),
        Subcategory("Beds", ("bed frame", "bunk bed", "ottoman bed", "headboard", "day bed"), 450, 0.5,
                    ("oak", "pine", "metal", "velvet", "linen"), True, "bed",
                    ("under-bed storage", "a slatted base", "a sturdy frame")),
        Subcategory("Shelving", ("bookcase", "wall shelf", "ladder shelf", "display cabinet", "cube shelf"), 110, 0.55,
                    ("oak", "pine", "metal", "walnut", "bamboo"), True, "",
                    ("adjustable shelves", "wall anchoring", "a compact footprint")),
        Subcategory("Office Furniture", ("standing desk", "writing desk", "filing cabinet", "desk", "monitor stand"),
                    220, 0.6, ("oak", "walnut", "metal", "bamboo", "laminate"), True, "",
                    ("cable management", "a height-adjustable frame", "a spacious top")),
    ),
    "Beauty": (
        Subcategory("Skin Care", ("moisturiser", "face serum", "cleanser", "sunscreen", "eye cream", "face mask"), 28,
                    0.5, ("hyaluronic acid", "vitamin c", "retinol", "aloe vera", "niacinamide", "shea butter"),
                    False, "volume", ("fragrance-free formula", "dermatologist-tested care", "lasting hydration")),
        Subcategory("Hair Care", ("shampoo", "conditioner", "hair oil", "hair mask", "dry shampoo"), 15, 0.45,
                    ("argan oil", "keratin", "coconut oil", "tea tree"), False, "volume",
                    ("a sulphate-free formula", "frizz control", "added shine")),
        Subcategory("Makeup", ("mascara", "lipstick", "foundation", "eyeshadow palette", "concealer", "blush"), 18,
                    0.5, ("matte", "satin", "shimmer", "cream"), True, "",
                    ("long-lasting wear", "buildable coverage", "a cruelty-free formula")),
        Subcategory("Fragrance", ("eau de parfum", "eau de toilette", "body mist", "perfume oil"), 55, 0.55,
                    ("floral", "woody", "citrus", "oriental", "fresh"), False, "volume",
                    ("a long-lasting scent", "an elegant bottle", "notes of bergamot")),
        Subcategory("Grooming", ("electric shaver", "beard trimmer", "razor", "shaving foam", "beard oil"), 35, 0.7,
                    ("stainless steel", "sandalwood", "menthol", "plastic"), False, "",
                    ("a precise cut", "skin-friendly blades", "a cordless design")),
    ),
    "Sports & Outdoors": (
        Subcategory("Fitness Equipment", ("dumbbell set", "kettlebell", "resistance band", "exercise bike",
                                          "jump rope", "foam roller"), 60, 0.8,
                    ("steel", "cast iron", "rubber", "foam"), True, "",
                    ("a non-slip grip", "a compact design", "home workout versatility")),
        Subcategory("Cycling", ("road bike", "bike helmet", "bike light", "cycling gloves", "bike lock"), 80, 1.0,
                    ("aluminium", "carbon fibre", "steel", "polycarbonate"), True, "",
                    ("a lightweight build", "high visibility", "an adjustable fit")),
        Subcategory("Camping", ("tent", "sleeping bag", "camping stove", "backpack", "camping chair", "headlamp"), 70,
                    0.7, ("nylon", "polyester", "ripstop nylon", "aluminium", "down"), True, "",
                    ("a waterproof design", "a packable size", "quick setup")),
        Subcategory("Yoga", ("yoga mat", "yoga block", "yoga strap", "meditation cushion", "yoga wheel"), 30, 0.5,
                    ("natural rubber", "cork", "tpe", "cotton", "foam"), True, "",
                    ("a non-slip surface", "extra cushioning", "an eco-friendly build")),
        Subcategory("Team Sports", ("football", "basketball", "volleyball", "shin guards", "goalkeeper gloves"), 30,
                    0.5, ("synthetic leather", "rubber", "polyurethane"), True, "",
                    ("a match-grade build", "a durable surface", "consistent bounce")),
        Subcategory("Swimming", ("swimsuit", "swim goggles", "swim cap", "swim shorts", "kickboard"), 25, 0.45,
                    ("nylon", "polyester", "silicone", "neoprene"), True, "apparel",
                    ("chlorine resistance", "an anti-fog coating", "a streamlined fit")),
    ),
    "Toys & Games": (
        Subcategory("Building Sets", ("building set", "construction kit", "magnetic tiles", "marble run"), 40, 0.7,
                    ("plastic", "wood", "magnetic"), False, "kids",
                    ("hundreds of pieces", "step-by-step instructions", "open-ended play")),
        Subcategory("Dolls & Figures", ("doll", "action figure", "dollhouse", "figure set", "play set"), 25, 0.6,
                    ("plastic", "vinyl", "wood", "fabric"), True, "kids",
                    ("poseable joints", "detailed accessories", "collectible design")),
        Subcategory("Board Games", ("board game", "card game", "strategy game", "party game", "chess set"), 30, 0.45,
                    ("cardboard", "wood", "plastic"), False, "kids",
                    ("quick rules", "replay value", "family-friendly play")),
        Subcategory("Puzzles", ("jigsaw puzzle", "3d puzzle", "puzzle cube", "floor puzzle"), 18, 0.45,
                    ("cardboard", "wood", "plastic"), False, "kids",
                    ("precision-cut pieces", "a vivid print", "a reference poster")),
        Subcategory("Outdoor Play", ("trampoline", "swing set", "scooter", "sandpit", "water blaster"), 90, 0.9,
                    ("steel", "plastic", "wood"), True, "kids",
                    ("weather-resistant parts", "a safety net", "sturdy construction")),
        Subcategory("Plush Toys", ("teddy bear", "plush bunny", "plush dinosaur", "soft toy"), 18, 0.45,
                    ("plush", "organic cotton", "fleece"), True, "kids",
                    ("super-soft fur", "safety-stitched eyes", "a huggable size")),
    ),
    "Grocery": (
        Subcategory("Coffee & Tea", ("ground coffee", "coffee beans", "green tea", "black tea", "herbal tea",
                                     "coffee pods"), 9, 0.4, ("arabica", "robusta", "decaf", "chai", "earl grey"),
                    False, "weight", ("a rich aroma", "ethically sourced beans", "a smooth finish")),
        Subcategory("Snacks", ("crisps", "chocolate bar", "granola bar", "mixed nuts", "crackers", "popcorn"), 4,
                    0.4, ("sea salt", "dark chocolate", "almond", "peanut", "cheddar"), False, "weight",
                    ("a satisfying crunch", "no artificial colours", "a resealable pack")),
        Subcategory("Pantry", ("olive oil", "pasta", "basmati rice", "tomato sauce", "spice mix", "honey"), 6, 0.5,
                    ("extra virgin", "wholewheat", "organic", "smoked", "wildflower"), False, "weight",
                    ("authentic flavour", "a long shelf life", "simple ingredients")),
        Subcategory("Beverages", ("sparkling water", "orange juice", "energy drink", "cold brew", "kombucha"), 3, 0.5,
                    ("lemon", "ginger", "berry", "unsweetened", "mango"), False, "volume",
                    ("a refreshing taste", "no added sugar", "natural flavours")),
        Subcategory("Breakfast", ("granola", "porridge oats", "cereal", "pancake mix", "peanut butter", "jam"), 5, 0.4,
                    ("oat", "honey", "strawberry", "cinnamon", "chocolate"), False, "weight",
                    ("wholegrain goodness", "a source of fibre", "a quick breakfast")),
    ),
    "Garden & DIY": (
        Subcategory("Power Tools", ("cordless drill", "impact driver", "circular saw", "angle grinder", "jigsaw",
                                    "sander"), 110, 0.55, ("brushless", "18v", "12v", "corded"), True, "",
                    ("a brushless motor", "two batteries included", "an LED work light")),
        Subcategory("Hand Tools", ("hammer", "screwdriver set", "spanner set", "tape measure", "utility knife",
                                   "pliers"), 20, 0.55, ("chrome vanadium", "steel", "fibreglass", "wood"), True, "",
                    ("an ergonomic grip", "hardened steel", "a lifetime guarantee")),
        Subcategory("Garden Tools", ("lawn mower", "hedge trimmer", "garden hose", "pruning shears", "leaf blower",
                                     "spade"), 60, 0.8, ("steel", "aluminium", "plastic", "ash wood"), True, "",
                    ("a lightweight build", "a rust-resistant finish", "easy storage")),
        Subcategory("Plants & Seeds", ("seed kit", "potted plant", "flower bulbs", "herb garden kit", "compost"),
                    12, 0.5, ("organic", "perennial", "heirloom", "peat-free"), False, "",
                    ("easy growing", "a high germination rate", "a colourful display")),
        Subcategory("Outdoor Furniture", ("garden bench", "patio set", "sun lounger", "parasol", "hammock"), 180,
                    0.6, ("teak", "acacia", "aluminium", "rattan", "steel"), True, "",
                    ("weather-resistant materials", "UV protection", "easy folding")),
        Subcategory("Paint & Decorating", ("wall paint", "wood stain", "paint roller set", "masking tape",
                                           "primer"), 25, 0.5, ("matt", "satin", "gloss", "eggshell"), True, "",
                    ("one-coat coverage", "a low-odour formula", "a washable finish")),
    ),
}

# fmt: on

#: Root category -> fictional brands. Each brand also gets a fixed price tier (see :func:`_brand_tier`).
BRANDS: dict[str, tuple[str, ...]] = {
    "Clothing": ("Northfold", "Linea", "Urban Thread", "Kestrel & Co", "Modo", "Fernway", "Bluecoast", "Atelier Nine"),
    "Shoes": ("Stridewell", "Pacehouse", "Terrano", "Corda", "Hollis", "Velo Step", "Mirefield", "Trekker"),
    "Electronics": ("Voltex", "Sonaro", "Pixelon", "Nuvia", "Quanta", "Arclight", "Helion", "Brightwave", "Zentri"),
    "Home & Kitchen": ("Hearthly", "Casa Mira", "Kitchcraft", "Dunmore", "Ovenbird", "Linden Home", "Potterstone"),
    "Furniture": ("Oakhaus", "Nordly", "Loftline", "Verano", "Timberset", "Atrium", "Stillwood"),
    "Beauty": ("Lumiere", "Verdana Botanics", "Glowfield", "Purelle", "Maison Sel", "Barber & Birch", "Aquila"),
    "Sports & Outdoors": ("Summitra", "Flexcore", "Ridgeback", "Aquafin", "Trailhawk", "Kinetik", "Goalline"),
    "Toys & Games": ("Brickly", "Tumbletown", "Wonderwood", "Playfox", "Gameweave", "Cubbie", "Starlark"),
    "Grocery": ("Golden Grove", "Hillside Farm", "Bean & Leaf", "Pantrywise", "Crispin's", "Morning Mill", "Fizzco"),
    "Garden & DIY": ("Forgewell", "Greenthumb", "Torqline", "Yardmaster", "Brushworks", "Ironbark", "Sproutly"),
}

# Adjectives per root category (plus _COMMON_ADJECTIVES, for every root).
_ROOT_ADJECTIVES: dict[str, tuple[str, ...]] = {
    "Clothing": ("Slim Fit", "Relaxed", "Oversized", "Cropped", "Vintage", "Essential", "Lightweight"),
    "Shoes": ("Lightweight", "Cushioned", "Waterproof", "Wide Fit", "Retro", "All-Terrain", "Minimalist"),
    "Electronics": ("Wireless", "Smart", "Ultra-Slim", "Pro", "Max", "Compact", "Portable", "Next-Gen"),
    "Home & Kitchen": ("Nordic", "Rustic", "Modern", "Heavy-Duty", "Minimalist", "Handmade", "Compact"),
    "Furniture": ("Mid-Century", "Scandinavian", "Industrial", "Modular", "Compact", "Solid", "Rustic"),
    "Beauty": ("Hydrating", "Nourishing", "Vegan", "Sensitive", "Radiance", "Intense", "Gentle"),
    "Sports & Outdoors": ("Lightweight", "Pro", "Adjustable", "Foldable", "All-Weather", "Training", "Ultralight"),
    "Toys & Games": ("Deluxe", "Junior", "Mini", "Giant", "Creative", "Interactive"),
    "Grocery": ("Organic", "Family Size", "Fairtrade", "Gluten-Free", "Artisan", "Reduced Sugar"),
    "Garden & DIY": ("Cordless", "Heavy-Duty", "Professional", "Compact", "Telescopic", "Multi-Purpose"),
}
_COMMON_ADJECTIVES = ("Classic", "Premium", "Everyday", "Signature", "Eco")
_ADJECTIVES: dict[str, tuple[str, ...]] = {root: adjs + _COMMON_ADJECTIVES for root, adjs in _ROOT_ADJECTIVES.items()}

_DESCRIPTION_OPENERS = (
    "The {brand} {name} brings {f1} to your everyday routine.",
    "Meet the {name} from {brand}: {f1} and {f2} in one {noun}.",
    "Designed by {brand}, this {noun} combines {f1} with {f2}.",
    "A {adj} {noun} with {f1}, made for people who want more from their {sub}.",
)
_DESCRIPTION_DETAILS = (
    "It features {f2} and {f3}.",
    "Expect {f3}, plus {f2}.",
    "Highlights include {f2}, {f3} and a {adj} look.",
)


def _stream(seed: int, block: int) -> random.Random:
    """The random stream of one block of products, keyed by BLAKE2b so it is independent of ``hash()``."""
    digest = hashlib.blake2b(f"shoprank-catalogue:{seed}:{block}".encode(), digest_size=16).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _brand_tier(brand: str) -> float:
    """A brand's fixed price multiplier in [0.7, 1.6] (budget ... premium)."""
    h = int.from_bytes(hashlib.blake2b(f"tier:{brand}".encode(), digest_size=8).digest(), "big")
    return 0.7 + 0.9 * (h / 2**64)


_BRAND_TIERS: dict[str, float] = {brand: _brand_tier(brand) for brands in BRANDS.values() for brand in brands}


def _price(rng: random.Random, sub: Subcategory, tier: float) -> float:
    raw = sub.median_price * tier * math.exp(rng.gauss(0.0, sub.sigma))
    if raw < 10:
        return max(0.49, round(raw * 2) / 2 - 0.01)  # 3.49, 3.99, ...
    if raw < 1000:
        return float(math.floor(raw)) + 0.99  # 24.99, 129.99, ...
    return float(round(raw, -1)) - 0.01  # 1249.99


_T = TypeVar("_T")

# The six orders in which a subcategory's three features can appear in a description.
_ORDERS: tuple[Callable[[Sequence[str]], tuple[str, ...]], ...] = tuple(
    operator.itemgetter(*order) for order in itertools.permutations(range(3))
)

# Flattened (root, subcategory) list, built once: products are spread uniformly over leaves.
_LEAVES: tuple[tuple[str, Subcategory], ...] = tuple((root, sub) for root, subs in TAXONOMY.items() for sub in subs)


# Zipf-like brand popularity within a root: the first brand sells most, the long tail least.
_BRAND_CUM_WEIGHTS: dict[str, tuple[float, ...]] = {
    root: tuple(itertools.accumulate(1 / (k + 1) ** 0.7 for k in range(len(brands)))) for root, brands in BRANDS.items()
}


@functools.cache
def _title_case(words: str) -> str:
    return " ".join(w if any(c.isupper() for c in w) else w[:1].upper() + w[1:] for w in words.split())


def _record(rng: random.Random, seed: int, index: int, tenant: str) -> dict[str, Any]:
    rnd = rng.random

    def pick(seq: Sequence[_T]) -> _T:  # rng.choice, minus its overhead
        return seq[int(rnd() * len(seq))]

    root, sub = pick(_LEAVES)
    brand = BRANDS[root][bisect.bisect(_BRAND_CUM_WEIGHTS[root], rnd() * _BRAND_CUM_WEIGHTS[root][-1])]
    noun = pick(sub.types)
    adj = pick(_ADJECTIVES[root])
    colour = pick(COLOURS) if sub.coloured else None
    material = pick(sub.materials) if sub.materials else None
    size = pick(SIZES[sub.sizes]) if sub.sizes else None

    parts = [brand, adj]
    if colour is not None and rnd() < 0.8:
        parts.append(colour.capitalize())
    if material is not None and rnd() < 0.5:
        parts.append(_title_case(material))
    parts.append(_title_case(noun))
    if rnd() < 0.3:
        parts.append(f"{pick('ABCDEFGHKLMRSTVX')}{pick(range(10, 1000, 10))}")  # a model number
    title = name = " ".join(parts)
    if size is not None and rnd() < 0.4:
        title += f", {size}"

    f1, f2, f3 = pick(_ORDERS)(sub.features)
    words = {"brand": brand, "name": name.removeprefix(brand + " "), "noun": noun, "adj": adj.lower(),
             "sub": sub.name.lower(), "f1": f1, "f2": f2, "f3": f3}  # fmt: skip
    sentences = [pick(_DESCRIPTION_OPENERS).format(**words), pick(_DESCRIPTION_DETAILS).format(**words)]
    if material is not None:
        sentences.append(f"Made with {material}.")
    if colour is not None:
        sentences.append(f"Colour: {colour}.")
    if size is not None:
        sentences.append(f"Size: {size}.")
    description = " ".join(sentences)

    attributes: dict[str, Any] = {"product_type": noun}
    if colour is not None:
        attributes["colour"] = colour
    if material is not None:
        attributes["material"] = material
    if size is not None:
        attributes["size"] = size
    attributes["rating"] = round(min(5.0, max(1.0, rng.gauss(4.1, 0.55))), 1)
    attributes["review_count"] = int(rng.expovariate(1 / 60))
    attributes["tags"] = sorted({root.lower(), sub.name.lower(), noun.split()[-1], adj.lower()})

    stock = 0 if rnd() < 0.08 else int(rng.expovariate(1 / 40)) + 1
    margin = round(min(0.7, max(-0.2, rng.gauss(0.3, 0.12))), 4)
    return {
        "tenant": tenant,
        "product_id": f"syn{seed}-{index:07d}",
        "updated_at": UPDATED_AT,
        "title": title,
        "description": description,
        "category_path": [root, sub.name],
        "brand": brand,
        "price": _price(rng, sub, _BRAND_TIERS[brand]),
        "currency": "USD",
        "margin": margin,
        "stock": stock,
        "attributes": attributes,
    }


def generate_catalogue(n: int, *, seed: int = 0, tenant: str = "demo") -> list[CatalogueUpdate]:
    """``n`` synthetic, validated product upserts; the same ``(n, seed)`` always gives the same products.

    Product ids are ``syn<seed>-<index>`` (unique within a seed, and across seeds). About 8% of products are
    out of stock; margins are mostly 0.05-0.55 with a few loss leaders below zero.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    validate = CatalogueUpdate.model_validate
    out: list[CatalogueUpdate] = []
    for start in range(0, n, BLOCK):
        rng = _stream(seed, start // BLOCK)
        out.extend(validate(_record(rng, seed, i, tenant)) for i in range(start, min(n, start + BLOCK)))
    return out


def product_topics(update: CatalogueUpdate) -> frozenset[str]:
    """The ground-truth intent labels of a product, lower-cased ``kind:value`` strings (kinds: :data:`TOPIC_KINDS`).

    ``root:<root category>``, ``category:<root>/<leaf>`` (the whole path joined by ``/``), ``brand:<brand>``, and
    ``type:``/``colour:``/``material:``/``size:`` from the attributes ``product_type``, ``colour``, ``material`` and
    ``size`` where present. Works for any :class:`CatalogueUpdate` (the bundled sample has only root, category
    and brand).
    """
    topics: set[str] = set()
    if update.category_path:
        topics.add(f"root:{update.category_path[0].lower()}")
        topics.add("category:" + "/".join(c.lower() for c in update.category_path))
    if update.brand:
        topics.add(f"brand:{update.brand.lower()}")
    attrs = update.attributes or {}
    for kind, key in (("type", "product_type"), ("colour", "colour"), ("material", "material"), ("size", "size")):
        value = attrs.get(key)
        if isinstance(value, str):
            topics.add(f"{kind}:{value.lower()}")
    return frozenset(topics)


def is_relevant(intent: Iterable[str], update: CatalogueUpdate) -> bool:
    """True when every label of ``intent`` (e.g. ``{"type:sneaker", "colour:red"}``) is one of the product's topics.

    An empty intent matches everything.
    """
    return set(intent) <= product_topics(update)
