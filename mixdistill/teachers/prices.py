"""USD prices per million tokens, used to record the cost of every call and to enforce a build's budget.

The table is a snapshot of the providers' public list prices (checked 2025); prices change, so a recipe can override
them per teacher (`prices: {input_per_mtok, output_per_mtok}`). Model ids are matched by the longest known prefix,
so dated snapshots (`gpt-4o-mini-2024-07-18`) find their family. Batch APIs are billed at half price.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixdistill.recipe import TeacherSpec

BATCH_DISCOUNT = 0.5

# model prefix -> (input, output) USD per million tokens
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
    "o4-mini": (1.10, 4.40),
    "o3-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}
# Providers whose calls cost nothing unless the recipe says otherwise (own hardware, or replaying stored outputs).
FREE_PROVIDERS = {"openai-compatible", "transformers", "replay"}


@dataclass(frozen=True)
class Price:
    input_per_mtok: float | None
    output_per_mtok: float | None

    @property
    def known(self) -> bool:
        return self.input_per_mtok is not None and self.output_per_mtok is not None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None, *, batch: bool = False) -> float | None:
        if not self.known or prompt_tokens is None or completion_tokens is None:
            return None
        usd = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return usd * BATCH_DISCOUNT if batch else usd


@dataclass(frozen=True)
class PriceTable:
    table: dict[str, tuple[float, float]] | None = None

    def lookup(self, model: str) -> Price:
        table = self.table if self.table is not None else DEFAULT_PRICES
        matches = [prefix for prefix in table if model == prefix or model.startswith(prefix + "-")]
        if not matches:
            return Price(None, None)
        return Price(*table[max(matches, key=len)])

    def for_teacher(self, spec: TeacherSpec) -> Price:
        if spec.prices is not None:
            return Price(spec.prices.input_per_mtok, spec.prices.output_per_mtok)
        if spec.provider in FREE_PROVIDERS:
            return Price(0.0, 0.0)
        return self.lookup(spec.model)
