"""Car Dealer: the rule-based buyer's language.

What the buyer understands in the seller's message (brands, body types and features mentioned,
acceptance of its counter-offer) and the template text of its replies, per personality.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_BRAND_PATTERNS = {
    "Volkswagen": r"volkswagen|\bvw\b",
    "Lexus": r"\blexus",
    "Ford": r"\bford\b",
    "Mazda": r"\bmazda",
    "Hyundai": r"\bhyundai",
    "Toyota": r"\btoyota",
    "Mercedes-Benz": r"\bmercedes|\bbenz\b",
    "BMW": r"\bbmw",
    "Audi": r"\baudi",
    "Subaru": r"\bsubaru",
    "Honda": r"\bhonda",
    "Porsche": r"\bporsche",
    "Tesla": r"\btesla",
}
_TYPE_PATTERNS = {
    "sedan": r"\bsedans?\b",
    "SUV": r"\bsuvs?\b|\bcrossovers?\b",
    "truck": r"\btrucks?\b|\bpickups?\b",
    "convertible": r"\bconvertibles?\b",
    "luxury": r"\bluxury\b",
    "electric": r"\belectric\s+(?:car|vehicle|model|suv|sedan|truck)s?\b|\bevs?\b|\ball-electric\b|\bfully electric\b",
}
_BODY_TYPES = {"sedan", "SUV", "truck", "convertible"}
_FEATURE_ARTICLES = {
    "backup camera": "a backup camera",
    "navigation system": "a navigation system",
    "sunroof": "a sunroof",
}
_FEATURE_PATTERNS = {
    "backup camera": r"backup camera|back-up camera|rear(?:view|-view)? camera|reverse camera",
    "navigation system": r"navigation|\bnav\b|\bgps\b",
    "heated seats": r"heated (?:front )?seats?|seat heat",
    "leather seats": r"leather",
    "third-row seating": r"third[- ]row|3rd[- ]row|seven seats|7 seats|seven-seat",
    "blind spot monitoring": r"blind[- ]spot",
    "sunroof": r"sunroof|moonroof|sun roof|moon roof|panoramic roof",
    "Apple CarPlay": r"carplay|car play",
}
_ACCEPT = re.compile(
    r"\b(?:it'?s a deal|(?:we|you)(?:'ve| have)? got (?:a|yourself a) deal|we have a deal|"
    r"deal\b(?!\s+(?:at|for|of|on))|"
    r"agreed|i agree|we agree|i accept|we accept|accepted|sold\b|it'?s yours|sounds good|let'?s do it|you got it|"
    r"that works|i can do that|we can do that|i'?ll take it|done\b)",
    re.IGNORECASE,
)
_NEGATED = re.compile(
    r"\b(?:no|not|never|cannot|can'?t|won'?t|don'?t|isn'?t|wouldn'?t|couldn'?t)\b\W+(?:\w+\W+){0,2}?"
    r"(?:deal|agree|accept|sold|do that|work|take)",
    re.IGNORECASE,
)


def mentioned(patterns: dict[str, str], text: str) -> set[str]:
    return {key for key, pattern in patterns.items() if re.search(pattern, text, re.IGNORECASE)}


def is_acceptance(text: str) -> bool:
    return bool(_ACCEPT.search(text)) and not _NEGATED.search(text)


def _money(value: float) -> str:
    return f"${value:,.0f}"


# ----------------------------------------------------------------------------------------------
# buyer text

_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "polite": {
        "intro": (
            "Hello! I'm looking for {car} with {features}.",
            "Hi, thank you. I'd like {car}, ideally with {features}.",
        ),
        "budget": (" I was hoping to spend around {anchor}.", " My budget is about {anchor}, if possible."),
        "ask_price": ("That sounds nice. What price could you offer me?", "Thank you. How much would it be?"),
        "ask_feature": (" Does it have {feature}?", " Could you tell me whether it has {feature}?"),
        "feature_ack": ("Great, I really wanted {feature}.", "Wonderful, {feature} is important to me."),
        "counter": (
            "That's a bit more than I can pay. Would you take {counter}?",
            "I'm sorry, {offer} is too much for me. Could you do {counter}?",
        ),
        "over_budget": ("{offer} is well beyond my budget, I'm afraid. I could do {counter}.",),
        "accept": ("{offer} works for me. It's a deal, thank you!", "Thank you, I'll take it at {offer}."),
        "brand_mismatch": ("I appreciate it, but I'm really set on {brand_a}.", "Thanks, but I'd prefer {brand_a}."),
        "type_mismatch": ("Thank you, but I'm looking for {type_a}.",),
        "premature": (" What would that price be for {car}?",),
        "unclear": ("I'm sorry, I didn't quite follow. What can you offer me?",),
        "walk_price": ("I'm sorry, we're too far apart on price. Thank you for your time, goodbye.",),
        "walk_mismatch": ("I'm sorry, I don't think you have what I'm looking for. Goodbye.",),
        "timeout": ("I'm sorry, this is taking too long. I'll think about it elsewhere. Goodbye.",),
        "accept_counter": ("Wonderful, {counter} it is. Thank you!",),
    },
    "talkative": {
        "intro": (
            "Oh hi there! So I've been shopping around for {car} for weeks now, and I really want {features}.",
            "Hey! Great to meet you. I'm after {car} - my last car died on me - and it has to have {features}.",
        ),
        "budget": (
            " Honestly I'd love to keep it near {anchor}, money's tight this year.",
            " I was thinking somewhere around {anchor}, you know?",
        ),
        "ask_price": (
            "Sounds lovely, I can already picture it in my driveway! So what's the damage?",
            "Oh nice, nice. And how much are we talking?",
        ),
        "ask_feature": (
            " Oh, and does it come with {feature}?",
            " And tell me, does it have {feature}? My friend swears by it.",
        ),
        "feature_ack": (
            "Oh perfect, {feature}! My sister has that and loves it.",
            "Ah, {feature}, exactly what I wanted.",
        ),
        "counter": (
            "Whoa, {offer}? That's more than I planned. How about {counter}? I think that's fair for both of us.",
            "Hmm, {offer} is steep for me. Could we meet at {counter}? I've seen similar ones for less, you know.",
        ),
        "over_budget": ("{offer}?! That's way over what I can spend. Let's talk closer to {counter}.",),
        "accept": ("{offer}? You know what, that works. Let's do it!", "Okay, okay, {offer} it is. Deal!"),
        "brand_mismatch": ("Oh no, I've got my heart set on {brand_a}, I've always wanted one.",),
        "type_mismatch": ("Hmm, no, I really need {type_a}, that's what fits my life right now.",),
        "premature": (" But what would that price be for {car} exactly?",),
        "unclear": ("Sorry, you lost me there! What are you offering?",),
        "walk_price": ("I've enjoyed chatting, but the price just isn't going to work. I'll try another dealer. Bye!",),
        "walk_mismatch": ("Sorry, this isn't what I came for. I'll look somewhere else. Bye!",),
        "timeout": ("Oh goodness, look at the time. I've got to go - I'll keep looking. Bye!",),
        "accept_counter": ("Yay, {counter}! It's a deal then.",),
    },
    "blunt": {
        "intro": ("I want {car} with {features}. Don't waste my time.", "Listen, I need {car} with {features}."),
        "budget": (" And I'm not paying more than {anchor}.", " My number is {anchor}."),
        "ask_price": ("Fine. What's the price?", "Just tell me the price."),
        "ask_feature": (" Does it have {feature} or not?",),
        "feature_ack": ("Good, it better have {feature}.",),
        "counter": ("{offer}? No way. {counter}, take it or leave it.", "That's a ripoff. I'll pay {counter}."),
        "over_budget": ("{offer}? Are you kidding me? {counter}, max.",),
        "accept": ("Fine. {offer}. Deal.", "{offer}. Okay, deal."),
        "brand_mismatch": ("I said {brand_a}. Are you even listening?",),
        "type_mismatch": ("I told you, I want {type_a}.",),
        "premature": (" What's the price for {car}?",),
        "unclear": ("What? Make sense. What's your offer?",),
        "walk_price": ("Forget it. I'm going somewhere else.",),
        "walk_mismatch": ("You're not listening. I'm out.",),
        "timeout": ("This is taking forever. I'm leaving.",),
        "accept_counter": ("Finally. {counter}, deal.",),
    },
    "irritated": {
        "intro": (
            "Ugh, I've been to three dealers already. I want {car} with {features}.",
            "I need {car} with {features}, and I'm in no mood for games.",
        ),
        "budget": (" I won't go past {anchor}.",),
        "ask_price": ("Okay, okay. What's the price?", "Fine. How much?"),
        "ask_feature": (" And does it have {feature}?",),
        "feature_ack": ("At least it has {feature}.",),
        "counter": ("{offer}?! That's ridiculous. {counter}.", "Come on, {offer} is way too much. I'll do {counter}."),
        "over_budget": ("{offer}? That's insane. {counter} and not a cent more.",),
        "accept": ("Fine, {offer}. Deal.", "{offer}... alright, deal."),
        "brand_mismatch": ("I SAID {brand_a}!",),
        "type_mismatch": ("I asked for {type_a}. Why is that so hard?",),
        "premature": (" And what's that for {car}?",),
        "unclear": ("What are you talking about? Give me a price.",),
        "walk_price": ("I've had enough. I'm leaving.",),
        "walk_mismatch": ("This is useless. Goodbye.",),
        "timeout": ("I'm done waiting. Goodbye.",),
        "accept_counter": ("Fine, {counter}. Deal.",),
    },
    "sarcastic": {
        "intro": (
            "Oh great, a car salesman, my favourite. I'm after {car} with {features}.",
            "Let me guess, you have just the car for me? I want {car} with {features}.",
        ),
        "budget": (" And shockingly, I'd like to pay around {anchor}.",),
        "ask_price": ("Wow, riveting. And the price would be?", "Fascinating. How much?"),
        "ask_feature": (" Does it have {feature}, or is that extra too?",),
        "feature_ack": ("Oh, {feature}, how generous.",),
        "counter": (
            "{offer}? Sure, and I'll throw in my kidney. How about {counter}?",
            "Ha, {offer}. Cute. {counter}.",
        ),
        "over_budget": ("{offer}? Did you add a zero by accident? Try {counter}.",),
        "accept": ("{offer}? Wow, a reasonable number. Deal.", "Look at that, {offer}. Fine, deal."),
        "brand_mismatch": ("Wow, that's almost {brand_a}. Almost.",),
        "type_mismatch": ("Right, because that's totally {type_a}.",),
        "premature": (" And that's for {car}, I assume?",),
        "unclear": ("Very deep. Now, a price maybe?",),
        "walk_price": ("This has been delightful. I'll take my money elsewhere.",),
        "walk_mismatch": ("Thrilling as this was, I'm going to a dealer who listens.",),
        "timeout": ("Well, this was a wonderful use of my afternoon. Bye.",),
        "accept_counter": ("Wow, {counter}. We have a deal.",),
    },
    "terse": {
        "intro": ("{car}. {features_cap}.", "Looking for {car}. Need {features}."),
        "budget": (" About {anchor}.",),
        "ask_price": ("Price?", "How much?"),
        "ask_feature": (" {feature_cap}?",),
        "feature_ack": ("Ok.",),
        "counter": ("Too much. {counter}.", "No. {counter}."),
        "over_budget": ("Way too much. {counter}.",),
        "accept": ("Ok. {offer}. Deal.", "Deal."),
        "brand_mismatch": ("{brand_cap} only.",),
        "type_mismatch": ("{type_a_cap}.",),
        "premature": (" For {car}?",),
        "unclear": ("What?",),
        "walk_price": ("No. Bye.",),
        "walk_mismatch": ("Bye.",),
        "timeout": ("Leaving.",),
        "accept_counter": ("Ok. Deal.",),
    },
}


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" or word.startswith(("SUV", "EV")) else "a ") + word


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["is_acceptance", "mentioned"]
