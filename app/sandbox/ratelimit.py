"""Per-account Send API rate limits (meta doc §4.1), and the usage headers reporting them (§4.2)."""

import json
import math
import time
from collections import defaultdict, deque
from typing import Literal

from app.sandbox.faults import RateLimit

WINDOW = 1.0  # seconds
# A budget: the name of its RateLimit field.
Bucket = Literal["per_second", "audio_video_per_second"]
# Meta's documented budgets per bucket: the scale of the usage headers when no limit is set.
DOCUMENTED: dict[Bucket, int] = {"per_second": 100, "audio_video_per_second": 10}


class RateLimiter:
    """Sliding one-second windows per (account, bucket); buckets are RateLimit's field names."""

    def __init__(self, limits: RateLimit):
        self.limits = limits
        self._calls: defaultdict[tuple[str, Bucket], deque[float]] = defaultdict(deque)
        self._blocked_until: dict[str, float] = {}

    def take(self, account: str, bucket: Bucket) -> bool:
        """Count one call, or refuse it (uncounted) when the account is over its limit."""
        now = time.monotonic()
        if now < self._blocked_until.get(account, 0):
            return False
        calls = self._recent(account, bucket, now)
        limit: int | None = getattr(self.limits, bucket)
        if limit is not None and len(calls) >= limit:
            if self.limits.regain_access_minutes:
                self._blocked_until[account] = now + self.limits.regain_access_minutes * 60
            return False
        calls.append(now)
        return True

    def headers(self, account: str) -> dict[str, str]:
        percent, minutes = self._usage(account)
        usage = {"call_count": percent, "total_cputime": percent, "total_time": percent}
        business = {
            account: [{"type": "instagram", **usage, "estimated_time_to_regain_access": minutes}]
        }
        return {
            "X-App-Usage": json.dumps(usage, separators=(",", ":")),
            "X-Business-Use-Case-Usage": json.dumps(business, separators=(",", ":")),
        }

    def _usage(self, account: str) -> tuple[int, int]:
        """The busiest bucket's share of its budget (%), and the minutes until access returns."""
        now = time.monotonic()
        blocked_for = self._blocked_until.get(account, 0) - now
        if blocked_for > 0:
            return 100, math.ceil(blocked_for / 60)
        shares = []
        for bucket, documented in DOCUMENTED.items():
            budget: int = getattr(self.limits, bucket) or documented
            shares.append(len(self._recent(account, bucket, now)) * 100 // budget)
        return min(max(shares), 100), 0

    def _recent(self, account: str, bucket: Bucket, now: float) -> deque[float]:
        calls = self._calls[account, bucket]
        while calls and calls[0] <= now - WINDOW:
            calls.popleft()
        return calls
