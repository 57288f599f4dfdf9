"""The Jinja2 sandbox templates render in, with every value a template builds capped *before* it is built.

A template is tenant input: it must not exhaust the worker's memory, whatever it computes. Jinja's
``SandboxedEnvironment`` refuses private attributes and unsafe callables; on top of it, every way a
template can make a large value is checked from its operands' sizes before the value is allocated:

* strings: ``+``, ``~``, ``*``, ``%`` (its widths and precisions), ``str.format`` (widths and
  precisions, field by field), the string methods that grow (``center``, ``ljust``, ``rjust``,
  ``zfill``, ``expandtabs``, ``replace``, ``join``, ``translate``), the filters that grow (``center``,
  ``indent``, ``wordwrap``, ``replace``, ``join``, ``format``, ``urlize``, ``tojson``), the text of a
  printed list or namespace, and the blocks a template captures (``{% set %}...{% endset %}``,
  macros, filter blocks): each at most :data:`MAX_STRING_CHARS`;
* lists and tuples: ``+``, ``*``, ``batch`` / ``slice``, splitting a string: at most :data:`MAX_ITEMS` items;
  the methods that change a list, dict or set in place (``append``, ``extend``, ``update``, ...) are refused;
* integers: ``*`` and ``**`` at most :data:`MAX_INT_BITS` bits; ``range`` at most :data:`MAX_RANGE` items.

Whatever a filter or method returns is checked again, so no intermediate string passes the cap.
A refusal is a :class:`~jinja2.exceptions.SecurityError` saying what was refused and the limit.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable, Mapping
from functools import update_wrapper
from typing import Any

from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace, _PassArg, generate_lorem_ipsum
from markupsafe import EscapeFormatter, Markup

MAX_STRING_CHARS = 1 << 20  # as large as the largest part (the HTML) may be
MAX_ITEMS = 100_000
MAX_INT_BITS = 1 << 16
MAX_RANGE = 10_000
MAX_EXPONENT = 64
MAX_JSON_INDENT = 16
_ESCAPED = 6  # the longest HTML escape of one character ('&#34;' and the like)
_REPR = 10  # the longest repr of one character ('\U000e0001')
_NUMBER_TEXT = 400  # a float's digits ('%f' % 1e308), beyond its precision
_OTHER_TEXT = 200  # str() of a small object (a loop, a cycler, the tenant)

_PERCENT = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def refuse_string(size: int, what: str) -> None:
    if size > MAX_STRING_CHARS:
        raise SecurityError(f"{what} would make a string of {size} characters; a template may build at most {MAX_STRING_CHARS}")


def refuse_items(count: int, what: str) -> None:
    if count > MAX_ITEMS:
        raise SecurityError(f"{what} would make a list of {count} items; a template may build at most {MAX_ITEMS}")


def text_size(value: Any, budget: int = MAX_STRING_CHARS) -> int:
    """An upper bound of the length of ``str(value)`` (lists and namespaces show their items' ``repr``),
    computed without building it; once past ``budget`` it stops counting and returns what it has."""
    if isinstance(value, str):
        return len(value)
    if value is None or isinstance(value, (bool, float)):
        return 32
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, Namespace):
        value = value._Namespace__attrs  # type: ignore[attr-defined]  # printed as <Namespace {...}>
    if isinstance(value, Mapping):
        items: Iterable[Any] = (part for pair in value.items() for part in pair)
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        return _OTHER_TEXT
    total = 16
    for item in items:
        total += 2 + (_REPR * len(item) + 2 if isinstance(item, str) else text_size(item, budget - total))
        if total > budget:
            break
    return total


def escaped_size(value: Any, autoescape: bool = True) -> int:
    """An upper bound of the length of ``value`` once HTML-escaped (exact for text; Markup stays as it is)."""
    if not autoescape or isinstance(value, Markup):
        return text_size(value)
    if isinstance(value, str):
        return len(value) + 4 * (value.count("&") + value.count('"') + value.count("'")) + 3 * (value.count("<") + value.count(">"))
    return text_size(value) * _ESCAPED


def percent_size(template: str, values: Any) -> int:
    """An upper bound of the length of ``template % values`` (printf-style), without building it."""
    mapping = values if isinstance(values, Mapping) else None
    positional = iter(values if isinstance(values, tuple) else () if mapping is not None else (values,))
    total = len(template)
    for found in _PERCENT.finditer(template):
        key, width, precision, conversion = found.groups()
        if conversion == "%":
            continue
        total += _count(next(positional, 0) if width == "*" else int(width or 0))
        total += _count(next(positional, 0) if precision == "*" else int(precision or 0))
        if mapping is not None:  # '%(name)s' takes the named value, '%s' prints the whole mapping
            value = mapping.get(key) if key is not None else mapping
        else:
            value = next(positional, None)
        total += text_size(value) * (_REPR if conversion in "ra" else 1) + _NUMBER_TEXT
        if total > MAX_STRING_CHARS:
            break
    return total


def refuse_joined(items: Iterable[Any], separator: int, autoescape: bool, what: str) -> None:
    """Refuse joining ``items`` with a separator of ``separator`` characters past the cap, stopping
    at the first item that passes it (each item is measured once)."""
    total = -separator
    for item in items:
        total += escaped_size(item, autoescape) + separator
        refuse_string(total, what)


def _count(value: Any) -> int:
    return abs(value) if isinstance(value, int) else 0


def spec_size(value: Any, spec: str) -> int:
    """An upper bound of the length of ``format(value, spec)``."""
    found = _SPEC.match(spec)
    width, precision = (found.group(1), found.group(2)) if found else ("", "")
    return max(int(width or 0), text_size(value)) + int(precision or 0) + _NUMBER_TEXT


# --- operators ---------------------------------------------------------------------------

_SEQUENCES = (str, bytes, list, tuple)


def _refuse_length(like: Any, size: int, what: str) -> None:
    """Refuse a sequence of ``size`` (characters when ``like`` is text, else items) past its cap."""
    if isinstance(like, (str, bytes)):
        refuse_string(size, what)
    else:
        refuse_items(size, what)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``left <operator> right`` when its result would pass a cap."""
    if operator == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _refuse_length(left, len(left) + len(right), "'+'")
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(times, int):
                _refuse_length(seq, len(seq) * max(times, 0), "'*'")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SecurityError(f"'*' would make an integer of over {MAX_INT_BITS} bits")
    elif operator == "**" and isinstance(right, (int, float)):
        if abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent over {MAX_EXPONENT} refused")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError(f"'**' would make an integer of over {MAX_INT_BITS} bits")
    elif operator == "%" and isinstance(left, str):
        refuse_string(percent_size(left, right), "'%' formatting")


def checked_join(eval_ctx: EvalContext, pieces: tuple[Any, ...]) -> str:
    """``a ~ b ~ ...``: Jinja's concatenation, its length checked first."""
    total = 0
    for piece in pieces:
        total += escaped_size(piece, eval_ctx.autoescape)
        refuse_string(total, "'~'")
    return (markup_join if eval_ctx.autoescape else str_join)(pieces)


def checked_concat(pieces: Iterable[str]) -> str:
    """The text a template captures (a ``{% set %}`` block, a macro, a filter block), its length checked first."""
    pieces = pieces if isinstance(pieces, list) else list(pieces)
    refuse_items(len(pieces), "a captured block")
    refuse_string(sum(len(piece) for piece in pieces), "a captured block")
    return "".join(pieces)


class CappedBuffer(list):
    """Where a template captures its output (a ``{% set %}`` block, a macro, a filter block): its
    length is checked as each piece arrives, so a loop cannot pile up pieces past the cap."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def append(self, item: Any) -> None:
        self.size += text_size(item)
        refuse_string(self.size, "a captured block")
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.append(item)


def check_result(value: Any, what: str) -> Any:
    """What a filter or method returned: a string or list past its cap is refused."""
    if isinstance(value, (str, bytes)):
        refuse_string(len(value), what)
    elif isinstance(value, (list, tuple)):
        refuse_items(len(value), what)
    return value


# --- methods of strings -------------------------------------------------------------------


def _pieces(text: str, separator: Any) -> int:
    if isinstance(separator, str) and separator:
        return text.count(separator) + 1
    return sum(text.count(space) for space in " \t\n\r\x0b\x0c") + 1


def _materialized(items: Any) -> list[Any]:
    found: list[Any] = []
    for item in items:
        found.append(item)
        refuse_items(len(found), "joining")
    return found


def check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Refuse a call of a string method whose result would pass a cap; the arguments to call it with
    (an iterable to join is read once, here)."""
    text = getattr(method, "__self__", None)
    if not isinstance(text, str) or not isinstance(method, (types.BuiltinMethodType, types.MethodType)):
        return args, kwargs
    name = method.__name__
    escaping = isinstance(text, Markup)  # a Markup method escapes its arguments
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        refuse_string(max(len(text), args[0]), what)
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        refuse_string(len(text) + text.count("\t") * _count(tab), what)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], args[1]
        times = len(text) + 1 if old == "" else text.count(old)
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            times = min(times, args[2])
        refuse_string(len(text) + times * max(0, escaped_size(new, escaping) - len(old)), what)
    elif name == "join" and args:
        items = _materialized(args[0])
        refuse_joined(items, len(text), escaping, what)
        args = (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((text_size(v) for v in args[0].values() if isinstance(v, str)), default=1)
        refuse_string(len(text) * max(longest, 1), what)
    elif name in ("split", "rsplit"):
        refuse_items(_pieces(text, args[0] if args else kwargs.get("sep")), what)
    elif name == "splitlines":
        refuse_items(_pieces(text, "\n") + text.count("\r"), what)
    return args, kwargs


# --- str.format ----------------------------------------------------------------------------


class _CappedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox: each field's width and precision checked before it is formatted,
    and the whole result as it grows."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._total = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._total += spec_size(value, format_spec) * (_ESCAPED if isinstance(self, EscapeFormatter) else 1)
        refuse_string(self._total, "str.format()")
        return super().format_field(value, format_spec)


class _CappedEscapeFormatter(_CappedFormatter, EscapeFormatter):
    pass


# --- filters -------------------------------------------------------------------------------


def _filter_check(name: str, autoescape: bool, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Refuse a filter call whose result would pass a cap; the value to call it with."""
    def arg(position: int, key: str, default: Any) -> Any:
        return args[position] if len(args) > position else kwargs.get(key, default)

    what = f"the {name!r} filter"
    text = value if isinstance(value, str) else None
    if name == "center" and text is not None:
        refuse_string(max(len(text), _count(arg(0, "width", 80))), what)
    elif name == "indent" and text is not None:
        width = arg(0, "width", 4)
        prefix = len(width) if isinstance(width, str) else _count(width)
        refuse_string(len(text) + (text.count("\n") + 1) * prefix, what)
    elif name == "wordwrap" and text is not None:
        width, wrap = arg(0, "width", 79), arg(2, "wrapstring", None)
        lines = 2 * len(text) // max(_count(width), 1) + text.count("\n") + 1
        refuse_string(len(text) + lines * (text_size(wrap) if wrap is not None else 2), what)
    elif name == "replace" and text is not None:
        old, new, count = arg(0, "old", ""), arg(1, "new", ""), arg(2, "count", None)
        old_text = str(old)
        times = len(text) + 1 if old_text == "" else text.count(old_text)
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        refuse_string(escaped_size(text, autoescape) + times * escaped_size(new, autoescape), what)
    elif name == "join":
        value = _materialized(value)
        separator = arg(0, "d", "")
        refuse_joined(value, escaped_size(separator, autoescape), autoescape, what)
    elif name == "format" and text is not None:
        refuse_string(percent_size(text, kwargs or tuple(args)), what)
    elif name == "urlize" and text is not None:
        extra = text_size(arg(2, "target", None) or "") + text_size(arg(3, "rel", None) or "")
        refuse_string((len(text) // 4 + 1) * extra, what)
    elif name == "tojson":
        indent = arg(0, "indent", None)
        if (isinstance(indent, int) and indent > MAX_JSON_INDENT) or (isinstance(indent, str) and len(indent) > MAX_JSON_INDENT):
            raise SecurityError(f"the 'tojson' filter indents by at most {MAX_JSON_INDENT}")
        refuse_string(text_size(value) * _ESCAPED, what)
    elif name in ("batch", "slice"):
        refuse_items(_count(arg(0, "linecount" if name == "batch" else "slices", 1)), what)
    elif name == "list" and text is not None:
        refuse_items(len(text), what)
    elif name in ("string", "pprint", "e", "escape", "forceescape", "safe", "urlencode", "xmlattr") and text is None:
        refuse_string(escaped_size(value, autoescape), what)
    return value


def capped_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter) with its result's size checked before and after the call."""
    pass_arg = _PassArg.from_obj(func)

    def capped(*args: Any, **kwargs: Any) -> Any:
        first = 1 if pass_arg is not None else 0
        autoescape = bool(getattr(args[0], "autoescape", False)) if pass_arg is _PassArg.eval_context else False
        value = _filter_check(name, autoescape, args[first], args[first + 1 :], kwargs)
        return check_result(func(*args[:first], value, *args[first + 1 :], **kwargs), f"the {name!r} filter")

    update_wrapper(capped, func)
    if pass_arg is not None:
        capped.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return capped


def capped_range(*args: int) -> range:
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise SecurityError(f"range() of more than {MAX_RANGE} items")
    return found


def capped_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (Jinja's names)
    refuse_string(_count(n) * _count(max) * 20, "lipsum()")
    return generate_lorem_ipsum(n, html, min, max)


class _CheckedCodeGenerator(CodeGenerator):
    """Jinja's code generator with ``~`` going through :func:`checked_join` and captured output
    into a :class:`CappedBuffer`."""

    def buffer(self, frame) -> None:  # noqa: ANN001 (Jinja's signature)
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.capped_buffer()")

    def visit_Concat(self, node, frame) -> None:  # noqa: ANN001, N802 (Jinja's visitor)
        self.write("environment.checked_join(context.eval_ctx, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox templates render in (see the module docstring)."""

    code_generator_class = _CheckedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = capped_range
        self.globals["lipsum"] = capped_lipsum
        self.filters = {name: capped_filter(name, func) for name, func in self.filters.items()}
        self.concat = checked_concat  # type: ignore[assignment]
        self.checked_join = checked_join
        self.capped_buffer = CappedBuffer

    def call_binop(self, context, operator, left, right):  # noqa: ANN001 (Jinja's signature)
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context, obj, /, *args, **kwargs):  # noqa: ANN001 (Jinja's signature)
        args, kwargs = check_method(obj, args, kwargs)
        return check_result(super().call(context, obj, *args, **kwargs), f"{getattr(obj, '__name__', 'a call')}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` / ``format_map`` through :class:`_CappedFormatter` (Jinja's own, sizes checked)."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in ("format", "format_map"):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_map = value.__name__ == "format_map"
        formatter = _CappedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else _CappedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(text)(formatter.vformat(text, args, kwargs))

        return update_wrapper(wrapper, value)
