"""Which links a stored row may carry: people click them in exports and readers."""

import re

C0_AND_SPACE = "".join(map(chr, range(33)))


def web_link(value):
    """A link people may follow: kept when its scheme is http or https (read as browsers read
    it: case aside, tabs and newlines anywhere and controls or spaces around it ignored), or
    when it has none (relative); else "" (no link): javascript:, data:, vbscript:, file:..."""
    if not isinstance(value, str):
        return value
    bare = re.sub(r"[\t\n\r]", "", value).strip(C0_AND_SPACE)
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):", bare)
    return "" if scheme and scheme[1].lower() not in ("http", "https") else value
