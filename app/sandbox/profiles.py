"""The User Profile API's data (meta doc §6): deterministic profiles, consent and request counts."""

import hashlib
from collections import Counter

from pydantic import BaseModel, ConfigDict

from app.sandbox import media
from app.sandbox.errors import GraphError

DEFAULT_FIELDS = ["name"]
Value = str | int | bool | None
UserProfile = dict[str, Value]  # field -> value, as the User Profile API answers


class ProfileFields(BaseModel):
    """Overrides for `POST /_sandbox/profiles`; the keys are the readable fields."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    username: str | None = None
    profile_pic: str | None = None
    follower_count: int | None = None
    is_user_follow_business: bool | None = None
    is_business_follow_user: bool | None = None
    is_verified_user: bool | None = None


FIELDS = set(ProfileFields.model_fields)


def generated(igsid: str, base_url: str) -> UserProfile:
    seed = int(hashlib.sha256(igsid.encode()).hexdigest(), 16)
    last4 = igsid[-4:]
    return {
        "name": f"User {last4}",
        "username": f"user_{last4}",
        "profile_pic": media.url(base_url, f"avatar_{igsid}.png"),
        "follower_count": seed % 5000,
        "is_user_follow_business": bool(seed & 1),
        "is_business_follow_user": bool(seed & 2),
        "is_verified_user": seed % 50 == 0,
    }


class Profiles:
    def __init__(self) -> None:
        self.consented: set[str] = set()
        self.overrides: dict[str, UserProfile] = {}
        self.requests: Counter[str] = Counter()

    def consent(self, igsid: str) -> None:
        self.consented.add(igsid)

    def override(self, igsid: str, fields: UserProfile, base_url: str) -> UserProfile:
        self.overrides[igsid] = {**self.overrides.get(igsid, {}), **fields}
        self.consent(igsid)
        return self.profile(igsid, base_url)

    def profile(self, igsid: str, base_url: str) -> UserProfile:
        return {"id": igsid, **generated(igsid, base_url), **self.overrides.get(igsid, {})}

    def read(self, igsid: str, fields: object, base_url: str) -> UserProfile:
        """A Graph profile read: counted, then answered as Meta does, errors included."""
        self.requests[igsid] += 1
        wanted = [f.strip() for f in str(fields).split(",")] if fields else DEFAULT_FIELDS
        for field in wanted:
            if field not in FIELDS | {"id"}:
                raise GraphError(100, f"(#100) Tried accessing nonexisting field ({field})")
        if igsid not in self.consented:
            raise GraphError(230, "(#230) User consent is required to access user profile")
        profile = self.profile(igsid, base_url)
        return {**{field: profile[field] for field in wanted}, "id": igsid}

    def clear(self) -> None:
        self.consented.clear()
        self.overrides.clear()
        self.requests.clear()
