"""The gateway config's ``[routes]`` table: how this host routes the other hosts' container subnets.

```toml
[routes]
mode = "dev"          # "dev": Nebula runs on this host; "via": through another host; "off"
device = "nebula1"    # mode "dev": Nebula's tun device
via = "172.20.48.1"   # mode "via": the next hop that runs Nebula (WSL2: the Windows side)
metric = 50           # 1-99
interval = 10         # seconds between reconciles in the gateway
```
"""

from __future__ import annotations

import enum
import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flatnet import i18n
from flatnet.i18n import Message

# Linux interface names: at most 15 bytes (IFNAMSIZ 16 with the NUL), no '/', ':' or whitespace.
_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
CONTAINER_NETWORK = ipaddress.IPv4Network("10.100.0.0/16")
# The metric `flatnet nebula config` gives Nebula's unsafe routes. flatnet's own metric stays
# below it, so the kernel prefers flatnet's route, and above 0, the metric of an unsafe route
# without one: Nebula 1.6.1 fails to start when an identical route (same prefix and metric)
# already exists.
NEBULA_ROUTE_METRIC = 100
DEFAULT_METRIC = 50
DEFAULT_INTERVAL_SECONDS = 10.0

i18n.define({
    "route_settings.device_invalid": (
        "{value!r} is not a Linux interface name: use 1-15 letters, digits, '_', '.' or '-', e.g. 'nebula1'",
        "{value!r} は Linux のインターフェース名ではありません。英字・数字・'_'・'.'・'-' の 1〜15 文字にしてください（例: 'nebula1'）",
    ),
    "route_settings.via_needed": (
        "mode 'via' needs via = \"<address of the host that runs Nebula>\", e.g. via = \"172.20.48.1\"",
        "mode 'via' には via = \"<Nebula を動かすホストのアドレス>\" が必要です（例: via = \"172.20.48.1\"）",
    ),
    "route_settings.via_in_container_network": (
        "via {via} is inside the container network {network}; give the address of the host"
        " that runs Nebula on the link to this one (for WSL2: the Windows side)",
        "via {via} はコンテナーネットワーク {network} の中にあります。"
        "このホストとつながるリンク上で Nebula を動かすホストのアドレス（WSL2 では Windows 側）を指定してください",
    ),
})


class RouteMode(str, enum.Enum):
    """The next hop of the other hosts' container subnets on this host."""

    DEV = "dev"  # into Nebula's tun device on this host
    VIA = "via"  # to a next hop that runs Nebula, such as Windows for a WSL2 host
    OFF = "off"  # flatnet leaves the kernel's routes alone


class RouteSettings(BaseModel):
    """The ``[routes]`` table of the gateway config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RouteMode = RouteMode.OFF
    device: str = "nebula1"
    via: ipaddress.IPv4Address | None = None
    metric: int = Field(DEFAULT_METRIC, ge=1, le=NEBULA_ROUTE_METRIC - 1)
    interval: float = Field(DEFAULT_INTERVAL_SECONDS, gt=0, le=3600, description="seconds between reconciles")

    @field_validator("device")
    @classmethod
    def _is_interface_name(cls, value: str) -> str:
        if not _INTERFACE_NAME.match(value):
            raise ValueError(Message("route_settings.device_invalid", value=value))
        return value

    @model_validator(mode="after")
    def _via_fits_mode(self) -> "RouteSettings":
        if self.mode is RouteMode.VIA and self.via is None:
            raise ValueError(Message("route_settings.via_needed"))
        if self.via is not None and self.via in CONTAINER_NETWORK:
            raise ValueError(Message("route_settings.via_in_container_network", via=self.via, network=CONTAINER_NETWORK))
        return self
