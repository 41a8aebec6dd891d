"""Realistic synthetic consultations in the API's response shape (dialect A), deterministic by seed."""

from __future__ import annotations

import random
import uuid
from typing import Any

_WORDS = [
    "pain",
    "since",
    "morning",
    "week",
    "better",
    "worse",
    "chest",
    "head",
    "stomach",
    "fever",
    "cough",
    "sleep",
    "tablets",
    "dose",
    "blood",
    "pressure",
    "allergy",
    "family",
    "history",
    "breath",
    "tired",
    "dizzy",
    "appointment",
    "okay",
    "yes",
    "no",
    "right",
    "sure",
    "mm-hmm",
    "really",
    "often",
    "every",
    "night",
    "day",
    "left",
    "side",
    "sharp",
    "dull",
    "exam",
    "results",
    "follow-up",
]
MIN_ITEMS, MAX_ITEMS = 50, 400
MAX_AUDIO_MS = 3_600_000


def synthetic_id(rng: random.Random) -> str:
    """A random version-4 UUID drawn from `rng` (so ids repeat under the same seed)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def synthetic_transcript(rng: random.Random) -> list[dict[str, Any]]:
    """50-400 items, mostly alternating doctor/patient, with some overlaps, gaps and noise."""
    items: list[dict[str, Any]] = []
    now = rng.randint(0, 3000)
    speaker = "doctor"
    for _ in range(rng.randint(MIN_ITEMS, MAX_ITEMS)):
        duration = rng.randint(300, 9000)
        if now + duration >= MAX_AUDIO_MS:
            break
        text = " ".join(rng.choice(_WORDS) for _ in range(max(1, duration // 400 + rng.randint(-2, 2))))
        who = "unspecified" if rng.random() < 0.03 else speaker
        items.append({"text": text, "speaker": who, "start_time_ms": now, "end_time_ms": now + duration})
        overlap = rng.random() < 0.15
        now = now + duration - rng.randint(100, duration // 2) if overlap else now + duration + rng.randint(0, 1500)
        if rng.random() < 0.8:
            speaker = "patient" if speaker == "doctor" else "doctor"
    return items


def synthetic_responses(count: int, seed: int) -> dict[str, dict[str, Any]]:
    """`count` succeeded responses keyed by lower-case id."""
    rng = random.Random(seed)
    responses = {}
    for n in range(count):
        tid = synthetic_id(rng)
        responses[tid] = {
            "id": tid.upper(),
            "client_request_id": f"synthetic-{seed}-{n}",
            "status": "succeeded",
            "payload": {"transcript": synthetic_transcript(rng)},
        }
    return responses
