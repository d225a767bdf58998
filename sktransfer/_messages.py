"""Wording shared by the error messages of every module (a leaf: it imports nothing of ours)."""

__all__ = ["with_article"]


def with_article(word: str) -> str:
    """``word`` after "a" or "an", chosen by its sound: "an int", "an ndarray", "a str", "a uint8"."""
    lower = str(word).lower()
    vowel = bool(lower) and lower[0] in "aeiou" and not lower.startswith(("uint", "uni", "use", "eu", "one"))
    if vowel or lower.startswith(("nd", "8", "11", "18")):  # "an ndarray", "an 8-d vector"
        return f"an {word}"
    return f"a {word}"
