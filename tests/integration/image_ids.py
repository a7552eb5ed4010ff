"""Short image ids as a Dockerfile's ``COPY --from`` can name them."""

from __future__ import annotations


def copy_from_id(image_id: str) -> str:
    """The shortest prefix (12 characters at least) of ``image_id`` that ``COPY --from``
    reads as an image: one of digits only is a stage's index to the builder (an error,
    never an image), which about one id in 280 begins with."""
    hex_id = image_id.removeprefix("sha256:")
    return next(hex_id[:n] for n in range(12, len(hex_id) + 1) if not hex_id[:n].isdigit())
