"""LMRL-Gym twenty questions: the word list by category (BOOST appendix E.1, Table 3)."""

from __future__ import annotations

from collections.abc import Sequence

#: LMRL-Gym's word list by category. Variants of one word are ";"-separated.
TWENTY_QUESTIONS_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Sports": (
        "Basketball",
        "Football",
        "Baseball",
        "Soccer ball",
        "Golf ball",
        "Tennis ball",
        "Volleyball",
        "Tennis racket",
        "Baseball bat",
        "Helmet",
    ),
    "Animals": (
        "Cat",
        "Dog",
        "Horse",
        "Cow",
        "Sheep",
        "Rabbit",
        "Lion",
        "Tiger",
        "Bear",
        "Elephant",
    ),
    "Fruits": (
        "Apple",
        "Banana",
        "Orange",
        "Strawberry",
        "Grape",
        "Watermelon",
        "Pineapple",
        "Mango",
        "Cantaloupe",
        "Peach",
    ),
    "Vehicles": (
        "Car",
        "Truck",
        "Motorcycle",
        "Boat",
        "Airplane;Plane",
        "Train",
        "Bus",
        "Helicopter",
        "Scooter",
        "Ship",
    ),
    "Clothes": (
        "Shirt",
        "Pants;Pant;Pair of pants",
        "Jacket",
        "Dress",
        "Skirt",
        "Belt",
        "Shoes;Shoe;Pair of shoes",
        "Boots;Boot;Pair of boots",
        "Socks;Sock;Pair of socks",
        "Hat",
        "Scarf",
    ),
    "Electronics": (
        "Computer",
        "Smartphone",
        "Television;TV",
        "Headphone;Headphones;Pair of headphones",
        "Monitor;Computer monitor",
        "Camera",
        "Microwave;Microwave oven",
        "Refrigerator",
        "Blender",
        "Computer keyboard;Keyboard",
    ),
    "Musical Instruments": (
        "Piano",
        "Guitar",
        "Drum;Drums",
        "Violin",
        "Saxophone",
        "Flute",
        "Trumpet",
        "Clarinet",
        "Harp",
        "Trombone",
    ),
    "Furniture": (
        "Chair",
        "Table",
        "Bed",
        "Desk",
        "Couch",
        "Dresser",
        "Bookcase",
        "Nightstand",
        "Mattress",
        "Pillow",
    ),
    "Office Supplies": (
        "Pen",
        "Paper;Piece of paper",
        "Stapler",
        "Printer",
        "Calculator",
        "Battery;Battery pack;Pack of batteries",
        "Toothbrush",
        "Toothpaste",
        "Pencil",
        "Sharpie",
        "Scissors;Pair of scissors",
        "Key",
        "Diary",
        "Calendar",
    ),
    "Vegetables": (
        "Carrot",
        "Potato",
        "Broccoli",
        "Tomato",
        "Onion",
        "Spinach",
        "Corn",
        "Peas;Pea",
        "Celery",
        "Cucumber",
    ),
    "Art": (
        "Painting;Canvas painting;Oil painting;Watercolor painting",
        "Paintbrush",
        "Canvas;Painting canvas",
        "Eraser;Pencil eraser",
        "Marker",
        "Glue;Glue stick;Bottle of glue",
        "Sculpture",
    ),
    "Kitchen Tools": (
        "Knife",
        "Spoon",
        "Fork",
        "Plate",
        "Bowl",
        "Cooking pot;Pot",
        "Pan;Saucepan;Frying pan",
        "Cup",
        "Chopstick;Chopsticks;Pair of chopsticks",
        "Whisk",
    ),
    "Nature": (
        "Rock",
        "Tree",
        "Bush",
        "Mountain",
        "Forest",
        "Ocean",
        "Sea",
        "Lake",
        "River",
        "Meteorite",
        "Cactus",
    ),
    "Toys": (
        "Lego;Lego set",
        "Doll;Toy doll;Plush doll",
        "Kite",
        "Puzzle;Jigsaw puzzle",
        "Stuffed animal",
    ),
    "Jewelry": (
        "Earring;Earrings;Pair of earrings",
        "Necklace",
        "Bracelet",
        "Ring",
        "Brooch",
        "Hairclip",
        "Pendant",
        "Watch",
        "Locket",
    ),
    "Garden Supplies": (
        "Gloves;Glove;Pair of gloves",
        "Shovel",
        "Rake",
        "Watering can",
        "Lawn mower",
    ),
    "Tools": (
        "Hammer",
        "Screwdriver",
        "Wrench",
        "Saw",
        "Pliers;plier;Pair of pliers",
        "Drill",
    ),
}
_WORD_CATEGORY = {
    variant.lower(): category
    for category, words in TWENTY_QUESTIONS_CATEGORIES.items()
    for word in words
    for variant in word.split(";")
}


def twenty_questions_category(word: str | Sequence[str]) -> str:
    """Category of a twenty-questions word (any variant), or ``""`` when it is not in the table."""
    variants = word.split(";") if isinstance(word, str) else list(word)
    for variant in variants:
        category = _WORD_CATEGORY.get(str(variant).strip().lower())
        if category:
            return category
    return ""


__all__ = ["TWENTY_QUESTIONS_CATEGORIES", "twenty_questions_category"]
