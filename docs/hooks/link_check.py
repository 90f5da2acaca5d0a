"""MkDocs hook: no link leaves the repository except to a public https URL.

MkDocs itself (``validation:`` in mkdocs.yml, ``--strict``) fails on a relative link to a missing page
or anchor. This hook adds what it does not check: links and images must be relative, a page anchor,
or ``https://`` on a public host; and no page may name a path outside the clone (``../shared``,
``/work/...``, ``file://``), in prose or in code.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from mkdocs.exceptions import PluginError

LOCAL_PATH = re.compile(r"\.\./shared\b|(?<![\w.:/-])/(?:work|home|root|tmp|mnt)/|file://")
LINK = re.compile(r"""<(?:a|img|link|script|source|iframe)\b[^>]*?\s(?:href|src)=["']([^"']*)["']""", re.I)
PRIVATE_HOSTS = {"localhost", "example.com"}


def link_problem(url: str) -> str | None:
    """Why ``url`` may not appear in the docs, else None."""
    if not url or url.startswith("#"):
        return None
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        return "an absolute path" if url.startswith("/") else None
    if parts.scheme != "https":
        return f"scheme '{parts.scheme or '//'}' (only https links may leave the site)"
    host = (parts.hostname or "").lower()
    if host in PRIVATE_HOSTS or host.endswith((".local", ".internal", ".localhost")):
        return f"host '{host}' is not public"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None if "." in host else f"host '{host}' is not public"
    return None if address.is_global else f"address '{host}' is not public"


def on_page_markdown(markdown: str, page, config, files) -> str:
    match = LOCAL_PATH.search(markdown)
    if match:
        line = markdown[: match.start()].count("\n") + 1
        raise PluginError(f"{page.file.src_uri}:{line}: names a path outside the repository: '{match.group(0)}'")
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    for url in LINK.findall(html):
        problem = link_problem(url)
        if problem:
            raise PluginError(f"{page.file.src_uri}: link '{url}': {problem}")
    return html
