"""The fault set that `POST /_sandbox/faults` replaces as a whole; `{}` clears every fault.

    {
      "transient_rate": 0..1,              # share of Graph calls failing with a transient error
      "latency_ms": int,                   # delay before every Graph answer
      "recipients": {"<IGSID>": {"code": int, "error_subcode": int|null, "message": str}},
      "revoked_tokens": ["<token>", ...],  # answered 190/460
      "malformed_tokens": ["<token>", ...],  # answered 190 "Malformed access token <token>"
      "require_appsecret_proof": false,    # true: a call without a valid proof is refused
      "rate_limit": {                      # per path account id, sliding 1 s windows
        "per_second": int|null,            # text, links, stickers, actions; null: unlimited
        "audio_video_per_second": int|null,
        "regain_access_minutes": int       # 0: the window alone throttles (headers say 0);
      },                                   # n: a tripped account stays blocked n minutes
      "timeout": {                         # null (default): no timeouts. A matching message
        "rate": 0..1,                      # send (default 1) is recorded and echoed, then its
        "recipients": ["<IGSID>", ...],    # answer never comes. Empty: every recipient.
        "times": int|null                  # how many sends it takes in all; null: no end
      },
      "echo": {"mode": "after"|"before"|"late"|"twice"|"none", "delay_ms": int},
      "unfetchable_media": ["<url>", ...]  # uploads of these answer 100/2018008
    }

Echo modes: "after" (default) posts the echo once the send is answered; "before" posts it and
waits for dmrelay's answer before answering the send; "late" posts it `delay_ms` (default 2000)
after the answer; "twice" posts it two times; "none" loses it. A send that times out gets its
echo as if it had been answered.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecipientFault(Strict):
    code: int
    error_subcode: int | None = None
    message: str = "Error injected by the dmrelay sandbox"


class RateLimit(Strict):
    per_second: int | None = Field(None, ge=1)
    audio_video_per_second: int | None = Field(None, ge=1)
    regain_access_minutes: int = Field(0, ge=0)


class Timeout(Strict):
    rate: float = Field(1.0, ge=0, le=1)
    recipients: list[str] = []
    times: int | None = Field(None, ge=0)


class Echo(Strict):
    mode: Literal["after", "before", "late", "twice", "none"] = "after"
    delay_ms: int = Field(2000, ge=0)


class Faults(Strict):
    transient_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: int = Field(0, ge=0)
    recipients: dict[str, RecipientFault] = {}
    revoked_tokens: list[str] = []
    malformed_tokens: list[str] = []
    rate_limit: RateLimit = RateLimit()
    timeout: Timeout | None = None
    echo: Echo = Echo()
    unfetchable_media: list[str] = []
    # As Meta with "Require App Secret" on: every call with a token must carry a valid
    # appsecret_proof (a proof given is checked either way).
    require_appsecret_proof: bool = False
