"""An HTTP client for the MailWizz REST API (REFERENCE.md, "MailWizz REST API").

* Bodies are form-encoded with PHP-style nesting (``campaign[template][content]=...``,
  ``subscribers[0][EMAIL]=...``): MailWizz does not read a JSON POST body.
* Auth: 2.x sends ``X-Api-Key``; 1.x signs every request (``X-MW-PUBLIC-KEY``, ``X-MW-TIMESTAMP``,
  ``X-MW-SIGNATURE`` = HMAC-SHA1 of the private key over the method, the URL with its sorted query
  and the sorted special headers + body parameters, encoded as PHP encodes them; the empty
  ``X-MW-REMOTE-ADDR`` is signed too, as the official SDK's ``Request::sign()`` does: see
  :func:`signature`). Auth failures answer 400.
* Retries (stamina: exponential backoff with jitter): 429 (waiting ``Retry-After`` when given),
  5xx and timeouts. A call that is not idempotent (a create, the pause/unpause toggle) is retried
  only when the server certainly did not act on it: 429, 503, or no connection at all. Its
  callers look the object up again before they try once more.
* Every answer is capped (``MAX_RESPONSE_BYTES``); an error envelope becomes a
  :class:`MailwizzError` whose text is a short escaped excerpt and never holds a key.
* Connections go through :func:`.guarded_http.guarded_client`: every address of the host is
  checked by the network policy before connecting to it; no proxies from the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import stamina

from email_engine_resources.guarded_http import REFUSED, guarded_client

MAX_RESPONSE_BYTES = 16 << 20
MAX_ERROR_CHARS = 300
MAX_RETRY_AFTER_S = 120.0
MAX_PAGES = 10_000
PER_PAGE = 50

FormValue = str | int | float | None | Mapping[str, Any] | Sequence[Any]


class MailwizzError(Exception):
    """A call MailWizz refused or that could not be made: ``status`` (0 when no answer) and a message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(f"MailWizz answered {status}: {message}" if status else f"MailWizz call failed: {message}")

    @property
    def definitive(self) -> bool:
        """The server answered and refused: retrying the same call changes nothing."""
        return 400 <= self.status < 500 and self.status != 429


class RefusedTarget(MailwizzError):
    def __init__(self, message: str):
        super().__init__(0, message)


def excerpt(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown + ("..." if len(text) > limit else "")


def php_form(data: Mapping[str, FormValue]) -> list[tuple[str, str]]:
    """Flatten nested mappings and sequences into PHP form pairs: ``{"a": {"b": [1]}}`` -> ``[("a[b][0]", "1")]``.

    ``None`` values are left out (PHP's ``http_build_query`` does the same).
    """
    pairs: list[tuple[str, str]] = []

    def walk(key: str, value: FormValue) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{key}[{k}]", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{key}[{i}]", v)
        elif isinstance(value, bool):
            pairs.append((key, "yes" if value else "no"))
        else:
            pairs.append((key, str(value)))

    for k, v in data.items():
        walk(str(k), v)
    return pairs


def _top_key(name: str) -> str:
    return name.split("[", 1)[0]


def php_urlencode(text: str) -> str:
    """PHP's ``urlencode`` (what ``http_build_query`` uses): ``+`` for a space, every byte but
    ``[A-Za-z0-9_.-]`` percent-encoded (``~`` too, unlike Python's ``quote_plus``)."""
    return quote_plus(text, safe="").replace("~", "%7E")


def php_query(pairs: Sequence[tuple[str, str]]) -> str:
    """PHP's ``http_build_query`` of already flattened pairs (:func:`php_form`)."""
    return "&".join(f"{php_urlencode(k)}={php_urlencode(v)}" for k, v in pairs)


def php_ksort(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """PHP's ``ksort($params, SORT_STRING)`` of the array the pairs flatten: ordered by top-level key
    (byte order), the pairs nested under one key keeping their order."""
    return sorted(pairs, key=lambda p: _top_key(p[0]))


def signature(private_key: str, method: str, url: str, query: Sequence[tuple[str, str]],
              special: Mapping[str, str], body: Sequence[tuple[str, str]]) -> str:
    """The 1.x ``X-MW-SIGNATURE``, built as the official SDK's ``Request::sign()`` builds it.

    Hex HMAC-SHA1 over ``"<METHOD> <url>[?<GET params, ksorted>]<sep><params, ksorted>"`` where the
    params are the three ``X-MW-*`` headers **all of them, an empty ``X-MW-REMOTE-ADDR`` included**
    (``X-MW-REMOTE-ADDR=``) merged with the body, and ``sep`` is ``&`` when the URL carries GET
    params, else ``?`` (whatever the method).
    """
    absolute = url
    if query:
        absolute += "?" + php_query(php_ksort(query))
    params = php_ksort([(k, str(v)) for k, v in special.items()] + list(body))
    separator = "&" if query and "?" in absolute else "?"
    text = f"{method.upper()} {absolute}{separator}{php_query(params)}"
    return hmac.new(private_key.encode(), text.encode(), hashlib.sha1).hexdigest()


class _Retry(Exception):
    """A failed attempt worth another: ``wait`` is the server's Retry-After, if it gave one."""

    def __init__(self, error: MailwizzError, wait: float | None = None):
        self.error = error
        self.wait = wait


def _retry_hook(exc: Exception) -> bool | float:
    if isinstance(exc, _Retry):
        return exc.wait if exc.wait is not None else True
    return False


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value.strip()), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # an HTTP date or garbage: the regular backoff applies


class MailwizzClient:
    """One MailWizz instance's API; ``str``/``repr`` show the URL only, never a key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_version: str = "2",
        private_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 4,
        allow_private: bool = False,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
        if api_version not in ("1", "2"):
            raise ValueError("api_version must be '1' or '2'")
        if api_version == "1" and not private_key:
            raise ValueError("MailWizz 1.x signed auth needs the private key")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._private_key = private_key
        self.api_version = api_version
        self.retries = retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.calls = 0
        self._clock = clock  # the 1.x signature's X-MW-TIMESTAMP
        self._http = guarded_client(allow_private=allow_private, timeout=timeout)

    def __repr__(self) -> str:
        return f"MailwizzClient({self.base_url!r}, api_version={self.api_version!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MailwizzClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------------

    def get(self, route: str, params: Mapping[str, FormValue] | None = None) -> dict[str, Any]:
        return self.request("GET", route, params=params)

    def post(self, route: str, data: Mapping[str, FormValue], *, idempotent: bool = False) -> dict[str, Any]:
        return self.request("POST", route, data=data, idempotent=idempotent)

    def put(self, route: str, data: Mapping[str, FormValue] | None = None, *, idempotent: bool = True) -> dict[str, Any]:
        return self.request("PUT", route, data=data or {}, idempotent=idempotent)

    def delete(self, route: str) -> dict[str, Any]:
        return self.request("DELETE", route, data={})

    def request(self, method: str, route: str, *, params: Mapping[str, FormValue] | None = None,
                data: Mapping[str, FormValue] | None = None, idempotent: bool | None = None) -> dict[str, Any]:
        """The decoded JSON envelope of a 2xx answer; :class:`MailwizzError` otherwise (after the retries)."""
        if idempotent is None:
            idempotent = method in ("GET", "PUT", "DELETE")
        query = php_form(params or {})
        body = php_form(data) if data is not None else None
        try:
            for attempt in stamina.retry_context(
                on=_retry_hook, attempts=self.retries + 1, timeout=None,
                wait_initial=self.backoff_initial, wait_max=self.backoff_max, wait_jitter=self.backoff_initial,
            ):
                with attempt:
                    return self._once(method, route, query, body, idempotent)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")

    def pages(self, route: str, params: Mapping[str, FormValue] | None = None) -> Iterator[dict[str, Any]]:
        """Every record of a paginated index (``data.records``), page by page until ``total_pages``."""
        for records in self.page_lists(route, params):
            yield from records

    def page_lists(self, route: str, params: Mapping[str, FormValue] | None = None) -> Iterator[list[dict[str, Any]]]:
        """The records of a paginated index one page at a time (a caller may stop after any page)."""
        page = 1
        while page <= MAX_PAGES:
            data = self.get(route, {**(params or {}), "page": page, "per_page": PER_PAGE}).get("data") or {}
            if not isinstance(data, dict):
                raise MailwizzError(200, f"GET {route}: 'data' is not an object")
            records = data.get("records") or []
            if not isinstance(records, list):
                raise MailwizzError(200, f"GET {route}: 'records' is not a list")
            yield [r for r in records if isinstance(r, dict)]
            try:
                total_pages = int(data.get("total_pages") or 0)
            except (TypeError, ValueError):
                raise MailwizzError(200, f"GET {route}: total_pages is not a number") from None
            if page >= total_pages or not records:
                return
            page += 1
        raise MailwizzError(200, f"GET {route}: more than {MAX_PAGES} pages")

    # -- one attempt -------------------------------------------------------------------------

    def _headers(self, method: str, url: str, query: list[tuple[str, str]], body: list[tuple[str, str]] | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "email-engine"}
        if self.api_version == "2":
            headers["X-Api-Key"] = self._api_key
            return headers
        special = {"X-MW-PUBLIC-KEY": self._api_key, "X-MW-TIMESTAMP": str(int(self._clock())), "X-MW-REMOTE-ADDR": ""}
        headers.update({k: v for k, v in special.items() if v})
        headers["X-MW-SIGNATURE"] = signature(self._private_key or "", method, url, query, special, body or [])
        return headers

    def _once(self, method: str, route: str, query: list[tuple[str, str]], body: list[tuple[str, str]] | None,
              idempotent: bool) -> dict[str, Any]:
        url = f"{self.base_url}/{route.lstrip('/')}"
        headers = self._headers(method, url, query, body)
        content = None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            content = urlencode(body).encode()
        self.calls += 1
        where = f"{method} {route}"
        try:
            with self._http.stream(method, url, params=query, headers=headers, content=content) as response:
                raw = self._read_capped(response, where)
        except httpx.ConnectError as exc:
            if REFUSED in str(exc):
                raise RefusedTarget(f"{where}: {excerpt(str(exc))}") from None
            raise _Retry(MailwizzError(0, f"{where}: cannot connect ({excerpt(str(exc), 120)})")) from None
        except httpx.ConnectTimeout:
            raise _Retry(MailwizzError(0, f"{where}: connect timed out")) from None
        except httpx.TimeoutException:
            error = MailwizzError(0, f"{where}: timed out waiting for the answer")
            if idempotent:
                raise _Retry(error) from None
            raise error from None
        except httpx.TransportError as exc:
            error = MailwizzError(0, f"{where}: {type(exc).__name__}")
            if idempotent:
                raise _Retry(error) from None
            raise error from None
        status = response.status_code
        envelope = self._decode(raw, status, where)
        if 200 <= status < 300:
            return envelope
        error = MailwizzError(status, f"{where}: {self._error_text(envelope, raw)}")
        if status == 429:
            raise _Retry(error, _retry_after(response.headers.get("Retry-After")))
        if status == 503 or (status >= 500 and idempotent):
            raise _Retry(error)
        raise error

    def _read_capped(self, response: httpx.Response, where: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise MailwizzError(response.status_code, f"{where}: answer of {declared} bytes is over the {MAX_RESPONSE_BYTES}-byte cap")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise MailwizzError(response.status_code, f"{where}: answer over the {MAX_RESPONSE_BYTES}-byte cap")
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, raw: bytes, status: int, where: str) -> dict[str, Any]:
        try:
            value = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            if 200 <= status < 300:
                raise MailwizzError(status, f"{where}: the answer is not JSON: {excerpt(self._redact(raw.decode('utf-8', 'replace')), 120)}") from None
            return {}
        return value if isinstance(value, dict) else {}

    def _error_text(self, envelope: dict[str, Any], raw: bytes) -> str:
        error = envelope.get("error")
        if isinstance(error, dict):
            text = "; ".join(f"{k}: {v}" for k, v in list(error.items())[:10])
        elif error:
            text = str(error)
        else:
            text = raw.decode("utf-8", "replace") or "no error text"
        return excerpt(self._redact(text))

    def _redact(self, text: str) -> str:
        for secret in (self._api_key, self._private_key):
            if secret:
                text = text.replace(secret, "[key]")
        return text
