"""Okabe & Ito's colour-blind-safe palette (tbtui's default too): the hues stay apart for protan,
deutan and tritan vision. One run, one colour, in the terminal and in the PNGs alike; past seven
runs the colours come round again with another line shape (the caller's: dashes, markers)."""
from __future__ import annotations

OKABE_ITO = {"orange": (230, 159, 0), "sky_blue": (86, 180, 233), "bluish_green": (0, 158, 115),
             "yellow": (240, 228, 66), "blue": (0, 114, 178), "vermillion": (213, 94, 0),
             "reddish_purple": (204, 121, 167)}
# the order runs take them in: the darker, more distinct hues first (yellow is pale on white)
RUN_ORDER = ("blue", "orange", "bluish_green", "vermillion", "sky_blue", "reddish_purple", "yellow")


def hex_style(rgb: tuple[int, int, int]) -> str:
    """A colour as #rrggbb (a rich style, a matplotlib colour)."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def run_colour(index: int) -> tuple[tuple[int, int, int], int]:
    """The `index`th run's colour, and which round of the palette it is in (0 for the first seven)."""
    return OKABE_ITO[RUN_ORDER[index % len(RUN_ORDER)]], index // len(RUN_ORDER)
