"""Text clean-up for feed fields: HTML to one plain line, no control characters."""

import html.parser
import re


class _Text(html.parser.HTMLParser):
    """The text of an HTML fragment: tags dropped, script and style with their content,
    entities decoded, a space where a block ends."""

    SKIP = {"script", "style", "template", "noscript", "iframe", "object", "svg", "head"}
    BLOCK = {"p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6",
             "blockquote", "pre", "section", "article", "header", "footer", "ul", "ol"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


SURROGATE = re.compile("[\ud800-\udfff]")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TAG = re.compile(r"</?[a-zA-Z][^>]*>|&(#?\w+);")
MAX_TEXT = 20_000
MAX_TITLE = 500


def plain(value):
    """Plain text of a feed field that may hold HTML (or HTML escaped twice, as some feeds
    send it): one line, whitespace collapsed."""
    text = value or ""
    if "<" not in text and "&" not in text:  # no markup, no entity: most titles
        return safe_text(" ".join(text.split())[:MAX_TEXT])
    for _ in range(2):  # once more when the first pass reveals escaped markup
        parser = _Text()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
        if not TAG.search(text):
            break
    return safe_text(" ".join(text.split())[:MAX_TEXT])


def safe_text(value):
    """value with lone surrogates (`&#xD800;` in a feed) replaced, since SQLite stores UTF-8,
    and control characters (NUL, C0 but tab and newline, C1) dropped: a feed's text must not
    hide words from sqlite3 (NUL) or drive the terminal of whoever reads it (escapes)."""
    return CONTROL.sub("", SURROGATE.sub("\ufffd", value))


def one_line(error):
    """An error as one short line of safe text, for a feed's report."""
    text = safe_text(" ".join(str(error).split())) or type(error).__name__
    return text[:300]
