"""Text from outside talktime (the API's codes and messages, input file names) made safe to store and to show.

Two layers. **Stored**: an error code becomes a short token (`api_code`) and an error message is
bounded and loses its control characters (`api_message`), before anything is written
(`flows.outcomes.responses_frame`, the one place outcomes become rows). **Shown**: whatever is
printed, logged, put in an artifact or handed to vl-convert is escaped where it is shown
(`printable`, `markdown_text`), so an output written before this rule, an operator's path or a
lease file cannot carry terminal escapes, forged log lines, Markdown images or HTML either.

The code rule, deterministic: a code of 1 to CODE_MAX_CHARS characters of `[A-Za-z0-9_.:-]` is
kept as it is. Any other code (empty, longer, or holding anything else) is rewritten as its first
CODE_MAX_CHARS characters with every run of other characters replaced by one `_`, cut to 55
characters, then `~` and the first 8 hex digits of the SHA-256 of the whole original code (UTF-8):
`\x1b[31mred` -> `_31mred~<8 hex>`. `~` is outside the allowed set, so a stored code holds `~`
exactly when talktime changed it; the digest keeps two different codes apart. The longest stored
code is 64 characters.
"""

from __future__ import annotations

import hashlib
import re

CODE_MAX_CHARS = 64
MESSAGE_MAX_CHARS = 1000
CHANGED_MARK = "~"
_DIGEST_CHARS = 8
_CODE_TOKEN = re.compile(rf"[A-Za-z0-9_.:-]{{1,{CODE_MAX_CHARS}}}")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_.:-]+")
# Control characters (C0, DEL, C1) and the invisible ones that move or hide text: soft hyphen,
# Arabic letter mark, Mongolian vowel separator, zero-width and direction marks, line and paragraph
# separators, bidirectional embeddings, overrides and isolates, word joiners, byte-order mark,
# interlinear annotations, tag characters.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)
_CONTROL_RUN = re.compile(_CONTROL.pattern + "+")
_MARKDOWN_ACTIVE = re.compile(r"([\\`*\[\]<>|~!&])")
ELLIPSIS = "…"


def api_code(value: str) -> str:
    """An error code from the API as a short printable token (the rule is in the module docstring)."""
    if _CODE_TOKEN.fullmatch(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    head = _NOT_TOKEN.sub("_", value[:CODE_MAX_CHARS])[: CODE_MAX_CHARS - _DIGEST_CHARS - len(CHANGED_MARK)]
    return f"{head}{CHANGED_MARK}{digest}"


def api_message(value: str) -> str:
    """An error message from the API as stored: each run of control characters one space, at most
    MESSAGE_MAX_CHARS characters (a cut message ends with `…`)."""
    clean = _CONTROL_RUN.sub(" ", value[: MESSAGE_MAX_CHARS * 4]) if _CONTROL.search(value) else value
    return bound(clean, MESSAGE_MAX_CHARS)


def bound(text: str, limit: int) -> str:
    """`text`, or its first `limit - 1` characters and `…` when longer."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def printable(text: str, limit: int | None = None) -> str:
    """`text` for a terminal or a log line: every control character written as an escape (`\\x1b`,
    `\\n`, `\\u202e`), so nothing moves the cursor, colours the screen or starts a new line;
    cut to `limit` characters when given."""
    if limit is not None:
        text = bound(text, limit)
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def markdown_text(text: str, limit: int | None = None) -> str:
    """`text` as literal Markdown: printable, and every character that could start an image, a link,
    HTML, code, emphasis, strike-through or a table cell backslash-escaped; `://` broken so that no
    bare URL is linked."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", printable(text, limit)).replace("://", ":\\/\\/")


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
