"""Tokens a model answer used, by kind, and what they cost by the configured price table.

Read from every answer, batch output line or direct call alike: the Responses API's `usage`
(`input_tokens`, `input_tokens_details.cached_tokens`, `output_tokens`,
`output_tokens_details.reasoning_tokens`) or Chat Completions' (`prompt_tokens`, …). Cached input
is part of the input and billed at its own price; reasoning is part of the output and billed as
output. The Batch API bills half (`batch_discount`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

PER_TOKENS = 1_000_000


class ModelPrice(BaseModel):
    """USD per million tokens of one model (OpenAI's list prices, set per deployment)."""

    model_config = ConfigDict(frozen=True)

    input: float
    cached_input: float
    output: float


class Tokens(BaseModel):
    """Tokens by kind and their estimated cost (None when a model has no price configured)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_cost_usd: float | None = None


class Usage(Tokens):
    """One answer's tokens, with the model that used them."""

    model: str | None = None


# Answers are parsed JSON, so their objects are dicts: checking for `dict` rather than the
# `Mapping` ABC made reading one answer's usage twice as fast.
def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _detail(usage: dict[str, Any], block: str, key: str) -> int:
    found = usage.get(block)
    return _tokens(found.get(key)) if isinstance(found, dict) else 0


# Where each API puts the counts: (input, its details block, cached), (output, its block, reasoning).
_RESPONSES = ("input_tokens", "input_tokens_details", "cached_tokens",
              "output_tokens", "output_tokens_details", "reasoning_tokens")
_CHAT = ("prompt_tokens", "prompt_tokens_details", "cached_tokens",
         "completion_tokens", "completion_tokens_details", "reasoning_tokens")


def _counts(body: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """(input, cached input, output, reasoning) tokens of one answer, or None when it reports none."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    fresh, fresh_block, cached, out, out_block, reasoning = _RESPONSES if "input_tokens" in usage else _CHAT
    return (_tokens(usage.get(fresh)), _detail(usage, fresh_block, cached),
            _tokens(usage.get(out)), _detail(usage, out_block, reasoning))


def _cost(counts: tuple[int, int, int, int], model: str, prices: Mapping[str, ModelPrice],
          discount: float) -> float | None:
    price = prices.get(model)
    if price is None:
        return None
    input_tokens, cached, output, _ = counts
    fresh = max(input_tokens - cached, 0)
    return discount * (fresh * price.input + cached * price.cached_input + output * price.output) / PER_TOKENS


def _usage(counts: tuple[int, int, int, int], model: str | None = None,
           cost: float | None = None) -> Usage:
    input_tokens, cached, output, reasoning = counts
    return Usage(input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output,
                 reasoning_tokens=reasoning, model=model, estimated_cost_usd=cost)


def answer_usage(body: Mapping[str, Any], model: str, prices: Mapping[str, ModelPrice],
                 discount: float = 1.0) -> Usage | None:
    """The token counts of one answer (None when it reports none) with its model and estimated
    cost; `discount` is the share billed (0.5 in batches). One model built, not one then a priced
    copy: every result line of a batch reads its answer's usage (7.2 -> 3.0 us an answer)."""
    counts = _counts(body)
    return None if counts is None else _usage(counts, model, _cost(counts, model, prices, discount))


def total(usages: Iterable[Tokens]) -> Tokens:
    """The sum of several usages (cost None if any part's cost is unknown)."""
    parts = list(usages)
    costs = [u.estimated_cost_usd for u in parts]
    return Tokens(input_tokens=sum(u.input_tokens for u in parts),
                  cached_input_tokens=sum(u.cached_input_tokens for u in parts),
                  output_tokens=sum(u.output_tokens for u in parts),
                  reasoning_tokens=sum(u.reasoning_tokens for u in parts),
                  estimated_cost_usd=None if None in costs else sum(c for c in costs if c is not None))


def summed(usages: Iterable[Usage | None], model: str) -> Usage | None:
    """Several answers' usage as one of `model` (None when none reported any)."""
    found = [usage for usage in usages if usage is not None]
    if len(found) < 2:
        return next(iter(found), None)
    return Usage(**total(found).model_dump(), model=model)


class JobUsage(Tokens):
    """A job's tokens and estimated cost in all, and per model."""

    by_model: dict[str, Tokens] = {}

    @classmethod
    def of(cls, usages: Iterable[Usage]) -> JobUsage:
        """Sum lot usages (each with its model) into a job's."""
        parts = list(usages)
        models: dict[str, list[Usage]] = {}
        for part in parts:
            models.setdefault(part.model or "unknown", []).append(part)
        return cls(**total(parts).model_dump(),
                   by_model={model: total(found) for model, found in models.items()})
