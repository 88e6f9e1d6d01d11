"""An API key held only to scrub it, and every long enough run of it, from text.

Every backend that sends a key (the OpenAI-compatible client, vLLM's server) scrubs
error messages and answers with it before they reach logs or the store.
"""

from __future__ import annotations

# The shortest run of the key's characters that is scrubbed: a server echoing part of the key
# (a masked "sk-...abcd1234" in an error, a model repeating a header) leaks that part. Shorter
# runs are left alone, so ordinary text sharing a few characters with the key stays as written.
SECRET_FRAGMENT = 8


class Secret:
    """Holds the API key only to scrub it (and its fragments) from text; its repr never shows it."""

    __slots__ = ("_anchors", "_grams", "_value")

    def __init__(self, value: str) -> None:
        self._value = value = value if value != "EMPTY" else ""
        n = SECRET_FRAGMENT
        # A fragment of >= n characters is a chain of the key's n-grams, and each n-gram holds
        # one of the key's 4-grams at a multiple of 4 in the key. Finding those few anchors
        # (str.find, C speed) is all an answer without a fragment costs: a 164-character
        # key has 41 of them where it has 157 n-grams.
        self._grams = frozenset(value[i : i + n] for i in range(len(value) - n + 1))
        self._anchors = frozenset(value[k : k + 4] for k in range(0, len(value) - 3, 4))

    def __repr__(self) -> str:
        return "Secret(***)"

    @property
    def active(self) -> bool:
        return bool(self._value)

    def scrub(self, text: str) -> str:
        """`text` with the key, and every run of it of SECRET_FRAGMENT characters or more, as ***."""
        if not self._value or not text:
            return text
        text = text.replace(self._value, "***")
        if not self._grams:
            return text
        n, grams = SECRET_FRAGMENT, self._grams
        starts: set[int] = set()
        for anchor in self._anchors:
            at = text.find(anchor)
            while at >= 0:
                # An n-gram holding this anchor starts at most 3 characters before it.
                starts.update(i for i in range(max(0, at - 3), at + 1) if text[i : i + n] in grams)
                at = text.find(anchor, at + 1)
        if not starts:
            return text
        pieces: list[str] = []
        done, cut_from, cut_to = 0, -1, -1
        for i in sorted(starts):
            if i > cut_to:  # a new cut; n-grams that overlap or touch the last one extend it
                if cut_to >= 0:
                    pieces += [text[done:cut_from], "***"]
                    done = cut_to
                cut_from = i
            cut_to = max(cut_to, i + n)
        pieces += [text[done:cut_from], "***", text[cut_to:]]
        return "".join(pieces)
