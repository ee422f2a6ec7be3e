"""What an L7 rule or policy may say, for both doors (the Octavia API and
the appliance schema): whatever the API accepts, haproxy must read as the
tenant meant it, and nothing a tenant sends may break or add to its config.

Octavia's checks (common/validate.py) are kept, with these departures:

- A header or cookie name is an RFC 7230 token without `'`. Octavia's
  pattern has the range `+-.`, which lets a comma in (haproxy would read
  `req.hdr(a,1)` as the header `a`'s first occurrence); haproxy's argument
  parser reads `'` as a quote.
- Values are printable ASCII (and tab): haproxy matches bytes, and a
  control character has no place in a header or path.
- A regular expression must compile in Python (Octavia's rule) and use
  nothing Python has and haproxy's PCRE2 lacks (`\\N{…}`, `\\u`, `\\U`,
  the `a`, `L` and `u` flags, names over 32 characters, POSIX classes PCRE2
  does not know), or haproxy would refuse the config.
- A redirect URL is http(s) with a host, in RFC 3986's characters (Octavia
  checks only its scheme, host and path: a space in its query broke the
  config).

Values reach haproxy's config strongly quoted (`render.loadbalancer`), so
`#`, `$`, `"`, `'`, `\\` and spaces are matched as they are. A value in
double quotes (Octavia's form for a header value with spaces) means its
content: haproxy reads Octavia's config that way.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

RULE_TYPES = ("HOST_NAME", "PATH", "FILE_TYPE", "HEADER", "COOKIE")
# Client-certificate rules: they need TERMINATED_HTTPS (no secret store yet).
TLS_RULE_TYPES = ("SSL_CONN_HAS_CERT", "SSL_VERIFY_RESULT", "SSL_DN_FIELD")
COMPARE_TYPES = ("REGEX", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUAL_TO")
ACTIONS = ("REJECT", "REDIRECT_TO_URL", "REDIRECT_TO_POOL", "REDIRECT_PREFIX")
REDIRECT_CODES = (301, 302, 303, 307, 308)
KEYED = ("HEADER", "COOKIE")
MAX_RULES = 50  # Octavia's MAX_L7RULES_PER_L7POLICY
MAX_POLICIES = 1000  # a listener's, here (Octavia sets none)

# An RFC 7230 token but `'`: a header or cookie name.
TOKEN = r"^[A-Za-z0-9!#$%&*+\-.^_`|~]{1,255}$"
# What a value may hold at all: printable ASCII and tab.
VALUE = r"^[\t\x20-\x7e]{1,255}$"
_TOKEN = re.compile(TOKEN)
_VALUE = re.compile(VALUE)
# Octavia's HTTP_HEADER_VALUE_REGEX and HTTP_QUOTED_HEADER_VALUE_REGEX.
_HEADER_VALUE = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]+")
_QUOTED_HEADER_VALUE = re.compile(r"\"[A-Za-z0-9 \t!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]*\"")
# Octavia's HTTP_COOKIE_VALUE_REGEX (its `+-.` range: `+`, `,`, `-`, `.`).
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9!#$%&'()*+,\-./:<=>?@\[\]^_`{|}~]+")

# Python regex syntax PCRE2 refuses.
_ESCAPE = re.compile(r"\\(N\{|.)", re.DOTALL)
_FLAGS = re.compile(r"\(\?[aiLmsux-]*[aLu][aiLmsux-]*[:)]")
_GROUP_NAME = re.compile(r"\(\?P?<([^>=!]*)>|\(\?P=([^)]*)\)")
_POSIX_CLASS = re.compile(r"\[([:.=])\^?([A-Za-z]*)\1\]")
_PCRE2_CLASSES = {
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph",
    "lower", "print", "punct", "space", "upper", "word", "xdigit",
}  # fmt: skip

# A redirect: http(s), a host, RFC 3986's characters.
REDIRECT_URL = r"^https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$"
_REDIRECT_URL = re.compile(REDIRECT_URL)


def token_problem(value: str) -> bool:
    """Whether `value` is no header or cookie name."""
    return not _TOKEN.fullmatch(value)


def value_problem(rule_type: str, compare_type: str, value: str) -> str | None:
    """Octavia's `l7rule_data` for a rule's value (its `key` aside), in
    Octavia's words; None if the value is fine."""
    if not literal(compare_type, value):
        # `""` too: haproxy keeps no empty pattern, and the rule would never match.
        return "Invalid L7 Rule: L7 rule type requires a value"
    if not _VALUE.fullmatch(value):
        return "Invalid characters in value: printable ASCII only"
    if compare_type == "REGEX":
        return regex_problem(value)
    if rule_type == "FILE_TYPE" and compare_type != "EQUAL_TO":
        return "Invalid L7 Rule: invalid comparison type for rule type"
    if rule_type == "COOKIE":
        ok = _COOKIE_VALUE.fullmatch(value)
        return None if ok else "Invalid characters in cookie value"
    if _HEADER_VALUE.fullmatch(value) or _QUOTED_HEADER_VALUE.fullmatch(value):
        return None
    return f"Invalid characters in {'header' if rule_type == 'HEADER' else 'comparison'} value"


def regex_problem(value: str) -> str | None:
    """Why haproxy (PCRE2) or Python cannot compile `value`, or None."""
    try:
        re.compile(value)
    except re.error as error:
        return f"Unable to parse regular expression: {error}"
    escapes = {m.group(1) for m in _ESCAPE.finditer(value)}
    if escapes & {"N{", "u", "U"} or _FLAGS.search(value):
        return (
            "Unable to parse regular expression: \\N{}, \\u, \\U and the a, L, u flags are Python's"
        )
    for named in _GROUP_NAME.finditer(value):
        if len(named.group(1) or named.group(2) or "") > 32:
            return "Unable to parse regular expression: group names are at most 32 characters"
    for posix in _POSIX_CLASS.finditer(value):
        if posix.group(1) != ":" or posix.group(2) not in _PCRE2_CLASSES:
            return f"Unable to parse regular expression: unknown POSIX class {posix.group(0)}"
    return None


def literal(compare_type: str, value: str) -> str:
    """What haproxy matches for a rule's value: a non-regex value in double
    quotes means its content (as haproxy reads Octavia's config)."""
    if compare_type != "REGEX" and _QUOTED_HEADER_VALUE.fullmatch(value):
        return value[1:-1]
    return value


def redirect_url_problem(url: str) -> bool:
    """Whether `url` is no redirect target (http or https, with a host)."""
    if len(url) > 255 or not _REDIRECT_URL.fullmatch(url):
        return True
    try:
        return not urlsplit(url).hostname
    except ValueError:
        return True
