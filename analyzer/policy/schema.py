"""The policy's JSON Schema (for editors and `canary schema`).
"""

from __future__ import annotations

from typing import Any

from analyzer.policy.model import Policy


def json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Canary Analyzer RolloutPolicy"
    return schema
