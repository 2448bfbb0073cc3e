"""Plain English words for synthetic tasks (keys of needles, word-extraction lists).

Written for this project; common nouns and adjectives, lower case, no duplicates.
"""

from __future__ import annotations

NOUNS: tuple[str, ...] = tuple(
    """
    apple anchor arrow badge basket beacon blanket bottle bridge bucket cabin candle canyon
    carpet castle cellar chain chimney circle cloud compass copper cotton crater crystal
    desert diamond dragon drum eagle engine falcon feather fence forest fountain garden
    garnet glacier hammer harbor helmet island jacket jungle kettle ladder lantern lemon
    lighthouse magnet marble meadow mirror monkey mountain needle oasis ocean orchard
    paddle palace parrot pebble pepper piano pillow planet pocket pond puzzle quarry
    rabbit radio ribbon river rocket saddle sailor scarf shadow shelter signal silver
    spider spoon statue stone sunset table teapot thunder ticket tiger tower trumpet
    tunnel umbrella valley velvet violin volcano wagon walrus window winter wizard zebra
    """.split()
)

ADJECTIVES: tuple[str, ...] = tuple(
    """
    ancient bitter bold brave bright calm careful cheerful clever cold crimson curious
    daring distant dusty eager early elegant empty fancy fierce fragile frozen gentle
    giant golden graceful hidden hollow honest humble icy jolly keen lively lonely
    loud lucky mellow mighty modest narrow noble odd orange patient plain polite proud
    quick quiet rapid rare restless round rustic scarlet secret shiny silent sleepy
    slow smooth sour sparkling steady sticky strange sturdy sudden swift tall tender
    tiny tired vast violet warm wild wise witty wooden young zealous
    """.split()
)

assert len(set(NOUNS)) == len(NOUNS) and len(set(ADJECTIVES)) == len(ADJECTIVES)
assert not set(NOUNS) & set(ADJECTIVES)

#: Every word, for word-extraction lists.
ALL_WORDS: tuple[str, ...] = NOUNS + ADJECTIVES
