"""MediaWiki wikitext → plain prose (the shape of HF ``wikimedia/wikipedia``'s ``text``).

One recursive pass over mwparserfromhell's node tree (its C tokenizer does the parsing): templates,
references, tables, comments, files/images/categories and interlanguage links go; link text stays;
headings stay as their own lines; the trailing reference-like sections go.
"""

from __future__ import annotations

import re

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

CLEANING_VERSION = 1  # part of the cache key: bump when the output of clean_wikitext changes

# Link namespaces whose links are not prose.
_DROP_LINK_PREFIXES = {"file", "image", "media", "category", "wikipedia", "wp", "help", "portal"}
# Tags whose content is not prose (or not text at all).
_DROP_TAGS = {
    "ref", "references", "table", "gallery", "math", "chem", "timeline", "imagemap", "score",
    "syntaxhighlight", "source", "templatedata", "graph", "mapframe", "maplink", "noinclude",
    "includeonly", "onlyinclude", "hiero", "ce", "inputbox", "categorytree", "poem",
}  # fmt: skip
_NEWLINE_TAGS = {"br", "li", "dt", "dd", "p", "div", "tr", "hr"}
_DROP_SECTIONS = {
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "sources", "citations", "footnotes", "notes and references", "references and notes",
}  # fmt: skip
# An interlanguage / interwiki link: [[de:Anarchismus]], [[wikt:word]] (lowercase prefix, short).
_INTERWIKI = re.compile(r"^:?[a-z][a-z\-]{1,11}:")
_MAGIC = re.compile(r"__[A-Z]+__")
_LEFTOVER = re.compile(r"\[\[|\]\]|\{\{|\}\}|\{\||\|\}")
_BLANKS = re.compile(r"\n{3,}")
_SPACES = re.compile(r"[ \t\u00a0]+")
_QUOTES = re.compile(r"'{2,}")  # bold/italic markup left unbalanced in the source
# What removed templates leave inside parentheses: "Achilles (; , Akhilleus, )" → "Achilles (Akhilleus)".
_EMPTY_PARENS = re.compile(r" ?\(\s*(?:[;,]\s*)*\)")
_PAREN_LEAD = re.compile(r"\(\s*(?:[;,]\s*)+")
_PAREN_TAIL = re.compile(r"(?:\s*[;,])+\s*\)")
# Pre-pass (before the parser, which is slow on deeply nested templates): refs, comments, and
# balanced {{templates}} / {| tables |} are removed by a linear scan.
_REFS = re.compile(r"<ref[^>]*?/>|<ref(?:\s[^>]*)?>.*?</ref\s*>|<!--.*?-->", re.S | re.I)
_BRACKETS = re.compile(r"\{\{|\}\}|\{\||\|\}|\[\[|\]\]")
_CLOSES = {"}}": "{{", "|}": "{|", "]]": "[["}
_DROP_LINK = re.compile(r"\[\[\s*:?\s*(file|image|media|category)\s*:", re.I)


def _removable_spans(text: str, ignored: set[int]) -> tuple[list[tuple[int, int]], int | None]:
    """Outermost balanced templates, tables and file/category links; and the first unclosed one."""
    spans: list[tuple[int, int]] = []
    stack: list[tuple[str, int, bool]] = []  # (opener, position, removable)
    pos = 0
    while m := _BRACKETS.search(text, pos):
        tok, start = m.group(), m.start()
        pos = m.end()
        if tok == "|}" and stack and stack[-1][0] == "{{" and text.startswith("}}", start + 1):
            tok, start, pos = "}}", start + 1, start + 3  # "{{x|}}": a template's empty last arg
        if tok in ("{{", "{|", "[["):
            if start not in ignored:
                removable = tok != "[[" or bool(_DROP_LINK.match(text, start))
                stack.append((tok, start, removable))
            continue
        want = _CLOSES[tok]
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == want:
                _, opened, removable = stack[depth]
                del stack[depth:]  # openers left inside never closed: they go with it
                if removable and not any(r for _, _, r in stack):
                    spans.append((opened, pos))
                break
    unclosed = next((p for _, p, r in stack if r), None)
    return spans, unclosed


def strip_templates(text: str) -> str:
    """Remove balanced ``{{templates}}``, ``{| tables |}`` and ``[[File:...]]``/category links.

    Nesting is honoured; an opener that never closes is kept as text (and the scan repeated
    without it), as MediaWiki renders it.
    """
    ignored: set[int] = set()
    while True:
        spans, unclosed = _removable_spans(text, ignored)
        if unclosed is None:
            break
        ignored.add(unclosed)
    spans.sort()
    out, pos = [], 0
    for start, end in spans:
        if start >= pos:  # spans found inside an unclosed opener's old extent may nest: skip those
            out.append(text[pos:start])
            pos = end
    out.append(text[pos:])
    return "".join(out)


def _link_prefix(title: str) -> str:
    title = title.strip().lstrip(":")
    return title.split(":", 1)[0].strip().lower() if ":" in title else ""


def _render(code: Wikicode, out: list[str]) -> None:
    for node in code.nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Wikilink):
            title = str(node.title)
            if _link_prefix(title) in _DROP_LINK_PREFIXES or _INTERWIKI.match(title.strip()):
                continue
            if node.text is not None:
                _render(node.text, out)
            else:
                out.append(title.strip().lstrip(":").split("#", 1)[0] or title.strip("#"))
        elif isinstance(node, Tag):
            tag = str(node.tag).strip().lower()
            if tag in _DROP_TAGS:
                continue
            if tag in _NEWLINE_TAGS:
                out.append("\n")
            if node.contents is not None and not node.self_closing:
                _render(node.contents, out)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _render(node.title, out)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, Heading):
            out.append("\n\n")
            _render(node.title, out)
            out.append("\n\n")
        elif isinstance(node, Template | Comment | Argument):
            continue
        # Anything else (parser-specific nodes) carries no prose.


def _drop_sections(code: Wikicode) -> Wikicode:
    """Drop reference-like sections (heading and body, up to the next heading of the same level)."""
    nodes = code.nodes
    keep: list = []
    skip_level = 0
    for node in nodes:
        if isinstance(node, Heading):
            if skip_level and node.level > skip_level:
                continue
            skip_level = 0
            if node.title.strip_code().strip().lower() in _DROP_SECTIONS:
                skip_level = node.level
                continue
        if not skip_level:
            keep.append(node)
    return Wikicode(keep)


def clean_wikitext(raw: str) -> str:
    """Plain prose from one article's wikitext; paragraphs separated by a blank line."""
    code = _drop_sections(mwparserfromhell.parse(strip_templates(_REFS.sub("", raw))))
    out: list[str] = []
    _render(code, out)
    text = _MAGIC.sub("", "".join(out))
    text = _QUOTES.sub("", _LEFTOVER.sub("", text))  # malformed markup the parser left as text
    lines = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        line = _PAREN_TAIL.sub(")", _PAREN_LEAD.sub("(", _EMPTY_PARENS.sub("", line)))
        # A line of only punctuation is what remains of a stripped list/table/template.
        if line and not line.strip("*#:;|,.()[]{}- "):
            line = ""
        lines.append(line)
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
