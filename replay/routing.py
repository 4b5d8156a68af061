"""Deciding a request again with the proxy's own Router, on a view rebuilt from the log.

:class:`ReplayState` is the replay side of :class:`flatnet.gateway.proxy.RoutingState`:
it contains the containers that held the name at the record's version vector,
the expired origins the record lists, and the owner's silence the record gives.
:class:`Replayer` hands a request rebuilt from the record's fields to
``Router.route`` (or, for a request the owner turned away with "not here", to
``Router.retry_after_not_here``), so the decision is the one the proxy's code
makes, never a copy of its rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import types
from collections.abc import Iterator

from flatnet.gateway import wire
from flatnet.gateway.decisions import Decision, DecisionRecord
from flatnet.gateway.proxy import HOP_HEADER, Route, Router
from flatnet.gateway.settings import Settings
from flatnet.logs import proxy as proxy_logger
from flatnet.registry import Container

_HOP_FIELD = HOP_HEADER.lower().encode()


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """The routing inputs of a request that replay can rebuild from its decision record."""

    host: str
    method: str
    hop: int | None
    expired: frozenset[int]
    # Seconds the owner had been silent, when the stale policy applied to the request.
    owner_silent: float | None
    retried_from: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """The part of a decision replay compares: where the request went, or which page it got."""

    decision: str
    owner: int | None
    container_id: str | None
    target: str | None
    # The status of a response the gateway wrote itself; None when it proxied the request.
    status: int | None = None

    def describe(self) -> str:
        parts = [self.decision]
        if self.owner is not None:
            parts.append(f"owner={self.owner}")
        if self.container_id is not None:
            parts.append(f"container={self.container_id[:12]}")
        if self.target is not None:
            parts.append(f"target={self.target}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        return " ".join(parts)


class ReplayState:
    """The RoutingState one replayed decision runs against; set anew for every decision."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = ""
        self.holders: tuple[Container, ...] = ()
        self.expired: frozenset[int] = frozenset()
        self.owner_silent: float | None = None
        # Seconds of silence per origin, when a what-if run models liveness itself.
        self.silences: dict[int, float] | None = None
        self.current_vector: dict[int, int] = {}

    def lookup(self, name: str) -> tuple[Container | None, frozenset[int]]:
        # The gateway's lookup is view.named(name, expired_origins=expired)[0].
        for container in self.holders:
            if container.origin not in self.expired:
                return container, self.expired
        return None, self.expired

    def lookup_expired(self, name: str) -> Container | None:
        return self.holders[0] if self.holders else None

    def vector(self) -> dict[int, int]:
        return self.current_vector

    def silent_seconds(self, origin: int) -> float:
        # Liveness is not in the log: the record gives how long the owner had
        # been silent when the stale policy applied, and was under the policy's
        # threshold otherwise. The recorded figure is rounded to 0.1 s, so it
        # is kept above the threshold that the gateway saw it pass.
        if origin == self.settings.host_id:
            return 0.0
        if self.silences is not None:
            return self.silences.get(origin, 0.0)
        if self.owner_silent is None:
            return 0.0
        return max(self.owner_silent, math.nextafter(self.settings.stale_seconds, math.inf))

    def mark_stale(self, name: str, container: Container) -> None:
        pass

    async def pull(self, origin: int) -> None:
        # The record's vector is the view after the gateway's pull already.
        return None

    def observe(self, batch: list[DecisionRecord]) -> None:
        pass


class Replayer:
    """Decides recorded requests again with the proxy's Router."""

    def __init__(self, settings: Settings):
        self.state = ReplayState(settings)
        self.router = Router(self.state, types.SimpleNamespace(observers=[]))
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def settings(self) -> Settings:
        return self.state.settings

    def decide(
        self, request: Request, holders: tuple[Container, ...], vector: dict[int, int], *, seed: Result | None = None,
        silences: dict[int, float] | None = None,
    ) -> Result:
        """Route ``request`` with ``holders`` as the containers of its name.

        A request with ``retried_from`` is replayed from the second attempt:
        ``seed`` contains what its first attempt recorded (owner and target),
        which the retry leaves in place when it finds no container. With
        ``silences``, each origin's silence comes from there instead of the record.
        """
        state = self.state
        state.silences = silences
        state.holders = holders
        state.expired = request.expired
        state.owner_silent = request.owner_silent
        state.current_vector = vector
        if request.retried_from is None:
            route = self.router.route(_head(request), "replay", from_peers=request.hop is not None)
        else:
            route = self._retry(request, holders, seed)
        record = route.record
        return Result(
            record.decision.value, record.owner, record.container_id, record.target,
            route.answer.status if route.answer is not None else None,
        )

    def _retry(self, request: Request, holders: tuple[Container, ...], seed: Result | None) -> Route:
        peer = request.retried_from
        record = DecisionRecord(
            ts=0.0, request_id="replay", client="replay", method=request.method, host=request.host,
            name=None, decision=Decision.PEER, owner=peer,
            container_id=seed.container_id if seed is not None else None,
            target=self.peer_target(peer),
        )
        first = self.router.route(_head(request), "replay", from_peers=False)
        record.name = first.record.name
        previous = Route(
            record, target_path=b"/", headers=list(first.headers), attempt=1, name=first.name or "",
            container=holders[0] if holders else None, peer=peer, request_id=b"replay",
        )
        exchange = types.SimpleNamespace(route=previous, claimed_owner=None)
        # A 503 that kept the first attempt's target means the body could not be sent again.
        replayable = not (
            seed is not None and seed.decision == Decision.STALE_RETRY.value and seed.status == 503
            and seed.target == record.target
        )
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self.router.retry_after_not_here(exchange, replayable=replayable))

    def peer_target(self, host_id: int | None) -> str | None:
        peer = self.settings.peer(host_id) if host_id is not None else None
        if peer is None:
            return None
        return f"http://{peer.api.host}:{peer.api.port or 80}"

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None


def _head(request: Request) -> wire.RequestHead:
    """Rebuild the request head the proxy parsed from the fields a decision record keeps."""
    headers: list[tuple[bytes, bytes]] = []
    fields: dict[bytes, list[bytes]] = {}
    if request.host:
        host = request.host.encode("latin-1")
        headers.append((b"Host", host))
        fields[b"host"] = [host]
    if request.hop is not None:
        hop = b"%d" % request.hop
        headers.append((HOP_HEADER.encode(), hop))
        fields[_HOP_FIELD] = [hop]
    method = request.method.encode("latin-1") if request.method and request.method != "-" else b"GET"
    return wire.RequestHead(
        method=method, target=b"/", version="1.1", headers=headers, keep_alive=True, upgrade=False,
        framing=wire.Framing.NONE, fields=fields,
    )


@contextlib.contextmanager
def quiet_proxy_logger() -> Iterator[None]:
    """Silence the proxy's logger while decisions are replayed.

    The Router logs what it does for live traffic (a peer it cannot reach, a
    loop); replaying old decisions must not repeat those lines.
    """
    was_disabled = proxy_logger.disabled
    proxy_logger.disabled = True
    try:
        yield
    finally:
        proxy_logger.disabled = was_disabled

