"""What a connection costs: round trips counted exactly by a relay, and timings against real servers."""

from pgbatten.bench.flights import ConnectionTrace, Flight, RoundTrips, Sender
from pgbatten.bench.relay import DelayRelay

__all__ = ["ConnectionTrace", "DelayRelay", "Flight", "RoundTrips", "Sender"]
