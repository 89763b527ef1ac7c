"""The messages a client sends over /api/v1/ws, as pydantic models (docs/websocket.md).

Every client message is a JSON object with ``type``; ``id`` (optional, a string the client
picks) is echoed in the ``ack`` or ``error`` that answers it. Unknown types and unknown fields
are refused with an ``error`` naming the field, like REST's 422, and types are strict as in REST
bodies (a level is a JSON integer: ``"3"``, ``3.0`` and ``true`` are refused).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from api.schemas.fields import Address

RequestId = Annotated[str, Field(min_length=1, max_length=64)]
SessionId = Annotated[str, Field(min_length=1, max_length=36, pattern="^[0-9a-fA-F-]+$")]
MAX_RATE_HZ = 100
MAX_QUEUE = 256
MIN_HEARTBEAT_S = 1.0
MAX_HEARTBEAT_S = 120.0


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: RequestId | None = None


class Auth(_Message):
    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=256)]
    heartbeat_s: Annotated[float, Field(ge=MIN_HEARTBEAT_S, le=MAX_HEARTBEAT_S)] | None = None


class Subscribe(_Message):
    type: Literal["subscribe"]
    device: Address | None = None
    session_id: SessionId | None = None
    from_seq: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = Field(
        default=None, description="Replay from this seq (last received + 1) while the ring has it"
    )
    rate_hz: Annotated[float, Field(gt=0, le=MAX_RATE_HZ)] | None = Field(
        default=None, description="Down-sample to at most this many frames per second"
    )
    queue: Annotated[int, Field(ge=1, le=MAX_QUEUE)] = Field(
        default=MAX_QUEUE, description="Frames held for a slow connection before the oldest drop"
    )
    telemetry: bool = True
    events: bool = True


class Unsubscribe(_Message):
    type: Literal["unsubscribe"]
    subscription: Annotated[str, Field(min_length=1, max_length=16)]


class Control(_Message):
    type: Literal["stop", "pause", "resume"]
    session_id: SessionId


class SetLevel(_Message):
    type: Literal["set_level"]
    session_id: SessionId
    level: Annotated[int, Field(ge=1, le=5)]


class Ping(_Message):
    type: Literal["ping"]


class Pong(_Message):
    type: Literal["pong"]


ClientMessage = Annotated[
    Auth | Subscribe | Unsubscribe | Control | SetLevel | Ping | Pong,
    Field(discriminator="type"),
]
CLIENT_MESSAGE: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
