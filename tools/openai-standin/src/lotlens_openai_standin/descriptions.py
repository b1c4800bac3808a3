"""The body of the stand-in's damage description: as long and as shaped as a real model's.

A vision model's description of a lot is 1.1-1.4 kB of HTML: a few paragraphs and a list of the
damaged parts. The stand-in wrote one sentence of about 80 characters, so everything LotLens does
with a description (sanitising, the translations' language checks, events, rows) was measured on
a fifteenth of the text it handles against OpenAI. The body is made of sentences from the tables
below, chosen by a CRC of the prompt: the same request gets the same answer (tests assert on it),
different lots different ones. It ends with a paragraph, so a translation's `[lang]` prefix goes
into its first paragraph and the answer keeps its blocks (`answer_rules.translated`).
"""

from __future__ import annotations

import zlib

# Findings for the paragraphs: each about 90-140 characters, plain text (nothing to escape).
_FINDINGS = (
    "The front bumper cover is pushed in on the left side and its lower grille is cracked through "
    "across most of its width.",
    "The bonnet shows a shallow crease along its leading edge, with the paint chipped down to the "
    "primer in two places.",
    "The left front wing is deformed behind the wheel arch, and the gap to the door is visibly "
    "wider than on the right side.",
    "Both headlamp units are in place, but the left lens is scratched and one of its mounting lugs "
    "appears to be broken off.",
    "The windscreen has a star-shaped chip in the lower passenger corner with a crack of about ten "
    "centimetres running from it.",
    "The rear bumper is scuffed at the right corner and sits slightly lower than the tailgate "
    "line, suggesting a broken clip.",
    "The driver's door has a dent the size of a hand below the handle, and the paint around it is "
    "creased but not broken.",
    "The alloy wheels show kerb damage on the front left and rear right rims, the tyres look intact "
    "in the photos.",
    "Inside, the driver's airbag has deployed and the dashboard cover above it is split; the seats "
    "look clean and undamaged.",
    "Water marks run along the lower door cards and the carpets look stained, which points to "
    "standing water in the cabin.",
    "The roof panel carries many small dents evenly spread over its surface, as hail leaves them, "
    "with no cracked glass.",
    "The engine bay could only be seen from the front; the radiator support looks bent and the "
    "coolant reservoir is out of place.",
)
# The list's items: the parts, each with what is wrong with it.
_PARTS = (
    "Front bumper: pushed in, grille cracked",
    "Bonnet: crease at the front edge, paint chipped",
    "Left front wing: deformed behind the wheel arch",
    "Left headlamp: lens scratched, mounting lug broken",
    "Windscreen: chip with a crack of about 10 cm",
    "Rear bumper: scuffed, right clip likely broken",
    "Driver's door: hand-sized dent below the handle",
    "Wheels: kerb damage on two rims",
    "Interior: driver's airbag deployed, dashboard split",
    "Carpets and door cards: water marks",
    "Roof: hail dents over the whole panel",
    "Radiator support: bent, reservoir displaced",
)
# How severe it looks, and what the photos did not show: the closing paragraph.
_CLOSINGS = (
    "Overall the damage looks moderate and concentrated at the front; structural parts behind the "
    "bumper could not be seen and may be affected as well.",
    "Overall the damage looks light to moderate and mostly cosmetic, though the broken clips and "
    "mounts will need replacing along with the panels.",
    "Overall the damage looks severe: the deformation reaches parts that carry loads, and the "
    "photos do not show the underside or the suspension.",
    "The photos are sharp and well lit from all four sides; the underside, the engine and the boot "
    "were not photographed, so nothing is said about them.",
)


def description_body(image_count: int, notes: str) -> str:
    """The paragraphs and list after the first paragraph of a description (1.1-1.4 kB with notes of
    a line), the same for the same images and notes."""
    seed = zlib.crc32(f"{image_count}:{notes}".encode("utf-8", "surrogatepass"))
    # Steps of 5 through 12 entries: no sentence twice in one description.
    first = [_FINDINGS[(seed + step * 5) % len(_FINDINGS)] for step in range(3 + seed % 2)]
    parts = [_PARTS[(seed // 7 + step * 5) % len(_PARTS)] for step in range(5 + (seed // 3) % 2)]
    second = [_FINDINGS[(seed + 1 + step * 5) % len(_FINDINGS)] for step in range(2)]
    # The last closing says the photos show all four sides: not of a lot with fewer photos.
    closings = len(_CLOSINGS) if image_count >= 4 else len(_CLOSINGS) - 1
    closing = _CLOSINGS[(seed // 13) % closings]
    items = "".join(f"<li>{part}</li>" for part in parts)
    return (f"<p>{' '.join(first)}</p><p>The damaged parts, as far as the photos show them:</p>"
            f"<ul>{items}</ul><p>{' '.join(second)} {closing}</p>")
