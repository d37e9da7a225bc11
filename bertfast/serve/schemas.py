"""Request bodies, validated at the boundary: pydantic (strict types: no "true" for true, no 1.0 for 1)
for the fields, and `parse_inputs` for the one field that is a union of shapes, so that its errors name
the index that was wrong."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from .errors import ApiError


class _Body(BaseModel):
    # Unknown fields are ignored, as the APIs these routes follow do (clients send e.g. OpenAI's `user`).
    model_config = ConfigDict(strict=True, extra="ignore")


class EmbeddingsRequest(_Body):
    """OpenAI's POST /v1/embeddings."""

    input: Any
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = None


class EmbedRequest(_Body):
    """TEI's POST /embed."""

    inputs: Any
    normalize: StrictBool = True
    truncate: StrictBool = False
    truncation_direction: Literal["Right", "right"] = "Right"


class RerankRequest(_Body):
    """TEI's POST /rerank."""

    query: StrictStr
    texts: list[StrictStr] = Field(min_length=1)
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool = False
    truncation_direction: Literal["Right", "right"] = "Right"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _token_ids(row: list, where: str, vocab_size: int) -> list[int]:
    if not row:
        raise ApiError(422, "an input of token ids must not be empty", where)
    for j, t in enumerate(row):
        if not _is_int(t):
            raise ApiError(422, f"must be an integer token id, got {type(t).__name__}", f"{where}[{j}]")
        if not 0 <= t < vocab_size:
            raise ApiError(422, f"token id {t} is outside the vocabulary [0, {vocab_size})", f"{where}[{j}]")
    return row


def check_text(text: str, where: str) -> str:
    """A str the tokenizer can read: JSON may carry a lone surrogate ("\\ud800"), which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        message = f"holds a lone surrogate at character {e.start}, which UTF-8 cannot encode"
        raise ApiError(422, message, where) from None
    return text


def parse_inputs(value: Any, field: str, max_inputs: int, vocab_size: int) -> list[str | list[int]]:
    """A string, a list of strings, a list of token ids, or a list of such lists -> one entry per input
    (a str, or a list of ids as the tokenizer makes them: [CLS] ... [SEP])."""
    if isinstance(value, str):
        return [check_text(value, field)]
    if not isinstance(value, list):
        raise ApiError(422, f"must be a string, a list of strings or a list of token ids, got {_kind(value)}", field)
    if not value:
        raise ApiError(422, "must not be an empty list", field)
    if _is_int(value[0]):  # one input, as token ids
        return [_token_ids(value, field, vocab_size)]
    if len(value) > max_inputs:
        raise ApiError(422, f"holds {len(value)} inputs, more than the {max_inputs} allowed per request", field)
    out: list[str | list[int]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(check_text(item, f"{field}[{i}]"))
        elif isinstance(item, list):
            out.append(_token_ids(item, f"{field}[{i}]", vocab_size))
        else:
            raise ApiError(422, f"must be a string or a list of token ids, got {_kind(item)}", f"{field}[{i}]")
    return out


def _kind(x) -> str:
    """A JSON value's type in JSON's words."""
    if x is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "a list"}.get(
        type(x), type(x).__name__
    )
