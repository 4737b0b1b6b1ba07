"""The base of every settings section (recsys.config): unknown keys are an error, and a value
assigned later is validated like one loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
