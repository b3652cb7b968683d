"""HTML -> text that keeps code blocks, for stage 8 (stdlib `html.parser`: no extra dependency).

- `<pre>` blocks become fenced code (```lang ... ```), their whitespace kept verbatim; the fence's
  language comes from a `language-x` / `lang-x` / `highlight-x` class on the `<pre>`, its `<code>`
  child or an enclosing element (Sphinx, highlight.js, Prism, GitHub conventions).
- Inline `<code>` (outside `<pre>`) becomes `backticks`.
- Headings become "# " lines, list items "- " lines; block elements separate paragraphs.
- Dropped with their content: script, style, noscript, template, svg, head (the title is kept
  apart), nav, header, footer, aside, form, button, select, iframe; elements whose role is
  navigation / banner / contentinfo / search / complementary; and elements with one of
  NAV_CLASSES as a class (Sphinx's related/sphinxsidebar bars, navbars, breadcrumbs, menus).

Counts of `<pre>` and `<code>` elements come back with the text: stage 8's tag rule reads them.
"""

from __future__ import annotations

import collections
import dataclasses
import html.parser
import re

SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav", "header",
                       "footer", "aside", "form", "button", "select", "iframe", "object", "canvas"})
SKIP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
NAV_CLASSES = frozenset({"related", "sphinxsidebar", "sphinxsidebarwrapper", "navbar", "nav",
                         "navigation", "breadcrumb", "breadcrumbs", "menu", "sidebar", "toc",
                         "header", "footer", "pagelinks", "skip-link", "site-nav", "topbar",
                         "headerlink"})  # Sphinx's "¶" permalink after every heading
BLOCK_TAGS = frozenset({"p", "div", "section", "article", "main", "body", "table", "tr", "ul", "ol",
                        "dl", "dt", "dd", "blockquote", "figure", "figcaption", "br", "hr", "li",
                        "h1", "h2", "h3", "h4", "h5", "h6", "pre", "td", "th", "caption", "details",
                        "summary", "address"})
VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                       "param", "source", "track", "wbr"})
_LANG_RE = re.compile(r"^(?:language|lang|highlight|sourceCode|brush:)-?([A-Za-z0-9_+#-]+)$")
_NOT_LANGS = frozenset({"default", "none", "text", "plain", "notranslate", "source"})


@dataclasses.dataclass(frozen=True)
class Extracted:
  """The text of a page and what the tag rule needs."""
  text: str
  title: str
  n_pre: int                  # <pre> blocks
  n_code: int                 # <code> elements (inside <pre> or inline)
  code_languages: tuple       # fence language per <pre> block ("" where none is declared)


def class_language(classes: str) -> str:
  """"highlight-python notranslate" -> "python"; "" when no class names a language."""
  for c in classes.split():
    if c == "highlight-default":  # Sphinx's default highlight_language is Python 3
      return "python"
    m = _LANG_RE.match(c)
    if m and m.group(1).lower() not in _NOT_LANGS:
      return {"py": "python", "js": "javascript", "sh": "shell", "bash": "shell",
              "console": "shell", "c++": "cpp", "pycon": "python"}.get(m.group(1).lower(),
                                                                     m.group(1).lower())
  return ""


class _Parser(html.parser.HTMLParser):

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.stack: list[tuple[str, str]] = []  # (tag, language declared by its class)
    self.open = collections.Counter()        # tag -> how many are on the stack
    self.skip_depth = 0                      # > 0: inside a dropped element (its stack depth)
    self.blocks: list[str] = []
    self.inline: list[str] = []
    self.pre: list[str] | None = None        # text of the open <pre>
    self.pre_lang = ""
    self.title: list[str] | None = None
    self.title_text = ""
    self.n_pre = self.n_code = 0
    self.langs: list[str] = []

  def _flush(self):
    text = re.sub(r"[ \t\r\n\f\v]+", " ", "".join(self.inline)).strip()
    self.inline = []
    if text and text not in ("-", "#"):
      self.blocks.append(text)

  def handle_starttag(self, tag, attrs):
    a = dict(attrs)
    if tag == "title" and not self.title_text:  # the first <title> (an <svg> may hold others)
      self.title = []
    if tag in VOID_TAGS:
      if tag in ("br", "hr") and not self.skip_depth:
        if self.pre is not None:
          self.pre.append("\n")
        else:
          self._flush()
      return
    classes = a.get("class") or ""
    self.stack.append((tag, class_language(classes)))
    self.open[tag] += 1
    if self.skip_depth:
      return
    if (tag in SKIP_TAGS or (a.get("role") or "") in SKIP_ROLES
        or NAV_CLASSES.intersection(classes.split())):
      self.skip_depth = len(self.stack)
      return
    if tag == "code":
      self.n_code += 1
      if self.pre is None:
        self.inline.append("`")
      elif not self.pre_lang:
        self.pre_lang = self.stack[-1][1]
      return
    if tag == "pre" and self.pre is None:
      self._flush()
      self.n_pre += 1
      self.pre = []
      # The nearest element (the <pre> itself first) whose class declares a language.
      self.pre_lang = next((l for _, l in reversed(self.stack) if l), "")
      return
    if tag in BLOCK_TAGS and self.pre is None:
      self._flush()
      if tag[0] == "h" and tag[1:].isdigit():
        self.inline.append("#" * int(tag[1]) + " ")
      elif tag == "li":
        self.inline.append("- ")

  def handle_endtag(self, tag):
    if tag == "title" and self.title is not None:
      self.title_text = re.sub(r"\s+", " ", "".join(self.title)).strip()
      self.title = None
    if tag in VOID_TAGS or not self.open[tag]:
      return  # a stray end tag: nothing to close
    while self.stack:
      depth = len(self.stack)
      open_tag, _ = self.stack.pop()
      self.open[open_tag] -= 1
      if self.skip_depth and depth <= self.skip_depth:
        self.skip_depth = 0
      elif not self.skip_depth:
        self._close(open_tag)
      if open_tag == tag:
        break

  def _close(self, tag):
    if tag == "pre" and self.pre is not None:
      code = "".join(self.pre).strip("\n")
      self.langs.append(self.pre_lang)
      if code.strip():
        self.blocks.append(f"```{self.pre_lang}\n{code}\n```")
      self.pre, self.pre_lang = None, ""
    elif tag == "code" and self.pre is None:
      if self.inline and self.inline[-1] == "`":
        self.inline.pop()  # an empty <code></code>: no stray backticks
      else:
        self.inline.append("`")
    elif tag in BLOCK_TAGS and self.pre is None:
      self._flush()

  def handle_data(self, data):
    if self.title is not None:
      self.title.append(data)
      return
    if self.skip_depth:
      return
    (self.pre if self.pre is not None else self.inline).append(data)

  def result(self) -> Extracted:
    if self.pre is not None:  # an unclosed <pre> at the end of a truncated page
      self._close("pre")
    self._flush()
    return Extracted("\n\n".join(self.blocks) + "\n" if self.blocks else "",
                     self.title_text, self.n_pre, self.n_code, tuple(self.langs))


def extract(html_text: str) -> Extracted:
  """Text of an HTML page with code blocks fenced and navigation/scripts/styles dropped. Pure."""
  p = _Parser()
  p.feed(html_text)
  p.close()
  return p.result()


def decode_html(data: bytes, content_type: str = "") -> str:
  """Bytes -> str: the charset of the Content-Type or a <meta charset>, else UTF-8 (replacing)."""
  m = re.search(r"charset=[\"']?([A-Za-z0-9_-]+)", content_type or "")
  if not m:
    m = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", data[:4096], re.IGNORECASE)
  charset = (m.group(1).decode() if isinstance(m.group(1), bytes) else m.group(1)) if m else "utf-8"
  try:
    return data.decode(charset, errors="replace")
  except LookupError:  # an unknown charset name: UTF-8 is the web's default
    return data.decode("utf-8", errors="replace")
