"""What a stored value may be: the pydantic field types and validators that the record models
(models.py) are built from. Each validator raises ValueError, which pydantic reports per field."""

import ast
import json
import math
import re
import uuid
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from .errors import InputError
from .times import parse_time


def stored_time(value):
    """A time or age as stored (times.parse_time), None kept; a bad one is a ValueError."""
    if value is None:
        return None
    try:
        return parse_time(value, field="")
    except InputError as e:  # its message without the field name, which pydantic adds
        raise ValueError(str(e).removeprefix(": ")) from None


# Deeper JSON is refused: json.dumps recurses, and SQLite's JSON functions stop at 1000 levels.
MAX_DEPTH = 64


def python_literal(text):
    """(value, JSON text) of a Python literal's text: the str(dict) that some of the original's
    writers stored where JSON belongs. Raises ValueError for text that is not one, or is longer
    than 100,000 characters (Python's parser is costly on long text)."""
    if len(text) > 100_000 or text.lstrip()[:1] not in "{[('\"":
        raise ValueError("not a Python literal")
    try:
        parsed = ast.literal_eval(text)
        return parsed, json.dumps(parsed, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a Python literal") from None


def json_text(value, *, keep_text=False):
    """Parse a string of JSON text (or of a Python literal, as the original stored some: see
    python_literal); leave other values (already parsed JSON) as they are.

    keep_text: a string that is neither is kept as a JSON string.
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        pass
    try:
        return json.loads(python_literal(value)[1])
    except (ValueError, RecursionError):
        if keep_text:
            return value
        raise ValueError(f"not valid JSON: {value[:40]!r}") from None


def json_or_text(value):
    """As json_text, keeping a string that is not JSON as a JSON string."""
    return json_text(value, keep_text=True)


def storable(value, path="$", depth=0, *, max_depth=MAX_DEPTH):
    """Refuse what SQLite cannot store as text or JSON: lone surrogates (no UTF-8 for them),
    NUL (other tools read text only up to it, while search finds what follows), NaN and
    infinities (not JSON), nesting deeper than max_depth (None: any). Returns value."""
    at = f" at {path}" if path != "$" else ""
    if isinstance(value, str):
        nul = value.find("\x00")
        if nul >= 0:
            raise ValueError(f"holds a NUL character{at}, which text may not hold "
                             f"(in {value[max(0, nul - 20):nul + 20]!r})")
        if value.isascii():
            return value
        try:
            value.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"not valid Unicode{at} (lone surrogate {value[e.start]!r} "
                             f"in {value[max(0, e.start - 20):e.start + 20]!r})") from None
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{json.dumps(value)}{at} is not a finite number")
    elif isinstance(value, (dict, list)):
        if depth == max_depth:
            raise ValueError(f"nested deeper than {max_depth} levels")
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            if isinstance(key, str):
                storable(key, path, depth, max_depth=max_depth)
                step = f".{key}" if re.fullmatch(r"\w+", key) else f"[{key!r}]"
            else:
                step = f"[{key}]"
            storable(item, path + step, depth + 1, max_depth=max_depth)
    return value


def not_blank(value):
    """Refuse text that is only whitespace (kept as given otherwise, never stripped)."""
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def content_object(value):
    """compressed_content: a JSON object, or plain text stored as {"text": ...}."""
    value = json_or_text(value)
    return {"text": value} if isinstance(value, str) else value


Time = Annotated[str | None, BeforeValidator(stored_time)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Text = Annotated[str, AfterValidator(not_blank)]  # stored as given, never stripped
JsonObject = Annotated[dict[str, Any], BeforeValidator(json_text)]
JsonAny = Annotated[Any, BeforeValidator(json_or_text)]
IdList = Annotated[list[str], BeforeValidator(json_text)]
Int64 = Annotated[int, Field(ge=-2**63, le=2**63 - 1)]  # what SQLite's INTEGER holds
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


def new_uuid():
    """A new random UUID as text: the default id of very-long-term memories and the like."""
    return str(uuid.uuid4())


def json_column(kind, value):
    """A JSON column's value: JSON text is kept as it is (byte for byte), another value is
    written as JSON; a string that is not JSON is a JSON string where any JSON may go."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
        except ValueError:
            if kind is not None:
                raise ValueError(f"not valid JSON: {value[:40]!r}") from None
            return json.dumps(value, ensure_ascii=False)
        # JSON text is kept as given, but refused, as `log` refuses it, when it holds what
        # SQLite cannot store (an escaped lone surrogate); its depth is SQLite's to judge.
        storable(parsed, max_depth=None)
    else:
        parsed, value = value, json.dumps(storable(value), ensure_ascii=False)
    if kind == "object" and not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    if kind == "array" and not isinstance(parsed, list):
        raise ValueError("must be a JSON array")
    return value
