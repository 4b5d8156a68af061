"""`flatnet demo`: a 2-host lab and the plan's checks, shown step by step.

The lab stays up afterwards so that a person can explore it; the last lines
say how, and how to take it down.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from flatnet import i18n
from flatnet.errors import FlatnetError
from flatnet.lab import build, layout, namespaces
from flatnet.lab.layout import LabPaths
from flatnet.lab.lab import Lab
from flatnet.lab.progress import display_width
from flatnet.lab.state import read_state

i18n.define({
    "demo.title": ("flatnet demo: two hosts, one flat network", "flatnet デモ: 2 台のホストに 1 つのフラットなネットワーク"),
    "demo.lab_exists": (
        "A lab is already up in {path}, perhaps with containers of yours; the demo builds its own."
        " Take it down with `{env}.venv/bin/flatnet lab down` (or `{env}make lab-down`) and run the demo again.",
        "{path} にラボがすでに起動しています (あなたのコンテナーがあるかもしれません)。デモは専用のラボを構築します。"
        "`{env}.venv/bin/flatnet lab down` (または `{env}make lab-down`) で削除してから、もう一度デモを実行してください。",
    ),
    "demo.step": ("\n[{number}] {title}", "\n[{number}] {title}"),
    "demo.ok": ("  OK  {detail}", "  OK  {detail}"),
    "demo.failed": ("  FAILED  {detail}", "  失敗  {detail}"),
    "demo.up": ("Build the lab: hosts h1 and h2, a LAN client, Nebula, a gateway per host", "ラボを構築: ホスト h1 と h2、LAN クライアント、Nebula、ホストごとのゲートウェイ"),
    "demo.up_done": ("lab up in {seconds:.1f} s", "{seconds:.1f} 秒でラボを構築しました"),
    "demo.run": ("Start web-a1 on h1 and web-b1 on h2 with podman", "podman で h1 に web-a1、h2 に web-b1 を起動"),
    "demo.run_done": ("web-a1 has {a}, web-b1 has {b}", "web-a1 は {a}、web-b1 は {b}"),
    "demo.route": ("h1 routes h2's containers through Nebula", "h1 は h2 のコンテナーへの経路を Nebula 経由で持つ"),
    "demo.ping": ("web-a1 on h1 pings web-b1 on h2 by address", "h1 の web-a1 から h2 の web-b1 へアドレスで ping"),
    "demo.registry": ("Gateway 1 lists web-b1 (host 2) in its registry", "ゲートウェイ 1 のレジストリーに web-b1 (ホスト 2) が載っている"),
    "demo.proxy": ("The LAN client asks gateway 1 for web-b1.flatnet", "LAN クライアントがゲートウェイ 1 に web-b1.flatnet を要求"),
    "demo.offline": ("Stop gateway 2, start web-b2 on h2, start gateway 2 again", "ゲートウェイ 2 を停止し、h2 で web-b2 を起動してから、ゲートウェイ 2 を再開"),
    "demo.offline_done": ("podman run worked without the gateway; web-b2 ({ip}) reached gateway 1 after it came back", "ゲートウェイなしで podman run が成功し、再開後に web-b2 ({ip}) がゲートウェイ 1 に届いた"),
    "demo.remove": ("Remove web-b2; it leaves both gateways", "web-b2 を削除すると両方のゲートウェイから消える"),
    "demo.proxy_done": ("page: {page}; access log: {decision}", "ページ: {page}、アクセスログ: {decision}"),
    "demo.no_route": (
        "h1 has no route to 10.100.2.0/24 through nebula1: {route}",
        "h1 に nebula1 経由の 10.100.2.0/24 への経路がありません: {route}",
    ),
    "demo.ping_failed": ("ping {address} failed: {summary}", "ping {address} が失敗しました: {summary}"),
    "demo.wrong_host": (
        "gateway 1 lists web-b1 on host {host}, expected 2",
        "ゲートウェイ 1 は web-b1 をホスト {host} に載せています (期待値は 2)",
    ),
    "demo.wrong_page": (
        "curl returned {page} (exit status {status}), expected the page of web-b1",
        "curl の結果は {page} (終了ステータス {status}) で、web-b1 のページではありません",
    ),
    "demo.not_listed": (
        "gateway {gateway} did not list {name} within {seconds} s",
        "ゲートウェイ {gateway} が {seconds} 秒以内に {name} を載せませんでした",
    ),
    "demo.not_logged": (
        "gateway 1's access log got no line for {name} within {seconds} s",
        "ゲートウェイ 1 のアクセスログに {seconds} 秒以内に {name} の行が書かれませんでした",
    ),
    "demo.not_removed": (
        "{name} was still listed by a gateway after {seconds} s",
        "{seconds} 秒たっても {name} がゲートウェイに載ったままでした",
    ),
    "demo.remove_done": ("web-b2 is gone from gateway 1 and gateway 2", "web-b2 はゲートウェイ 1 と 2 の両方から消えた"),
    "demo.summary_ok": ("\nAll {count} checks passed. The lab is still up; explore it:", "\n{count} 件すべての確認に成功しました。ラボは起動したままです。次のように試せます:"),
    "demo.summary_failed": ("\n{failed} of {count} checks failed (see above). The lab is still up for a look:", "\n{count} 件中 {failed} 件の確認に失敗しました (上記参照)。調査用にラボは起動したままです:"),
    "demo.explore": (
        "  {env}.venv/bin/flatnet lab status\n"
        "  {env}.venv/bin/flatnet lab exec client -- curl -s -H 'Host: web-a1.flatnet' http://198.18.0.2/\n"
        "  {env}.venv/bin/flatnet lab exec h1 -- curl -s http://10.100.0.1:8080/api/containers\n"
        "  {env}.venv/bin/flatnet lab exec h1 -- .venv/bin/flatnet status --config {config}\n"
        "Take it down with:\n"
        "  {env}.venv/bin/flatnet lab down      (or: {env}make lab-down)",
        "  {env}.venv/bin/flatnet lab status\n"
        "  {env}.venv/bin/flatnet lab exec client -- curl -s -H 'Host: web-a1.flatnet' http://198.18.0.2/\n"
        "  {env}.venv/bin/flatnet lab exec h1 -- curl -s http://10.100.0.1:8080/api/containers\n"
        "  {env}.venv/bin/flatnet lab exec h1 -- .venv/bin/flatnet status --config {config}\n"
        "削除するには:\n"
        "  {env}.venv/bin/flatnet lab down      (または {env}make lab-down)",
    ),
})

WAIT_SECONDS = 15


class CheckFailed(Exception):
    """A demo check whose outcome was not what flatnet promises."""


def _wait_for(condition: Callable[[], object], failure_key: str, **values: object) -> object:
    """Return the first true value of ``condition()``, or raise CheckFailed with message ``failure_key``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(i18n.text(failure_key, seconds=WAIT_SECONDS, **values))
        time.sleep(0.2)


def _hang(text: str, columns: int) -> str:
    """Indent every line of ``text`` after the first by ``columns`` spaces, under the first line's start."""
    return ("\n" + " " * columns).join(text.split("\n"))


def _containers(lab: Lab, host: str) -> list[dict]:
    host_id = host.removeprefix("h")
    result = lab.exec(host, ["curl", "-s", "-m", "3", f"http://10.100.0.{host_id}:8080/api/containers"], check=True)
    return json.loads(result.stdout)


def _entry(lab: Lab, host: str, name: str) -> dict | None:
    return next((entry for entry in _containers(lab, host) if entry["hostname"] == name), None)


class Demo:
    def __init__(self) -> None:
        self.number = 0
        self.failed = 0
        self.lab: Lab | None = None
        self.addresses: dict[str, str] = {}

    def step(self, title_key: str, action: Callable[[], str]) -> None:
        self.number += 1
        print(i18n.text("demo.step", number=self.number, title=i18n.text(title_key)), flush=True)
        try:
            detail = action()
        except (CheckFailed, FlatnetError) as error:
            self.failed += 1
            self._print_result("demo.failed", str(error))
            return
        self._print_result("demo.ok", detail)

    @staticmethod
    def _print_result(key: str, detail: str) -> None:
        """Print ``detail`` after the label of ``key``, with its further lines indented under its first."""
        label_columns = display_width(i18n.text(key, detail=""))
        print(i18n.text(key, detail=_hang(detail, label_columns)), flush=True)

    def build(self) -> str:
        started = time.monotonic()
        self.lab = build.up(hosts=2, progress=lambda line: print(f"      {line}", flush=True))
        return i18n.text("demo.up_done", seconds=time.monotonic() - started)

    def run_containers(self) -> str:
        self.addresses["web-a1"] = self.lab.run_web("h1", "web-a1")
        self.addresses["web-b1"] = self.lab.run_web("h2", "web-b1")
        return i18n.text("demo.run_done", a=self.addresses["web-a1"], b=self.addresses["web-b1"])

    def route(self) -> str:
        route = self.lab.exec("h1", ["ip", "route", "show", "10.100.2.0/24"], check=True).stdout.strip()
        if "dev nebula1" not in route:
            raise CheckFailed(i18n.text("demo.no_route", route=repr(route)))
        label = "ip route: "
        return label + _hang(route, display_width(label))

    def ping(self) -> str:
        address = self.addresses["web-b1"]
        result = self.lab.podman("h1", "exec", "web-a1", "ping", "-c", "2", "-W", "2", address, check=False)
        summary = next((line for line in result.stdout.splitlines() if "packets transmitted" in line), result.stdout.strip())
        if result.returncode != 0:
            raise CheckFailed(i18n.text("demo.ping_failed", address=address, summary=summary or result.stderr.strip()))
        return f"ping {address}: {summary}"

    def registry(self) -> str:
        entry = _wait_for(lambda: _entry(self.lab, "h1", "web-b1"), "demo.not_listed", gateway=1, name="web-b1")
        if entry["hostId"] != 2:
            raise CheckFailed(i18n.text("demo.wrong_host", host=entry["hostId"]))
        return f"GET http://10.100.0.1:8080/api/containers -> hostname={entry['hostname']} ip={entry['ip']} hostId={entry['hostId']} ttl={entry['ttl']}"

    def proxy(self) -> str:
        result = self.lab.exec("client", ["curl", "-s", "-m", "5", "-H", "Host: web-b1.flatnet", "http://198.18.0.1/"])
        page = result.stdout.strip()
        if "web-b1" not in page:
            raise CheckFailed(i18n.text("demo.wrong_page", page=repr(page), status=result.returncode))
        # The gateway writes decisions in the background, after the response is sent.
        lines = _wait_for(lambda: self._access_lines("h1", "web-b1.flatnet"), "demo.not_logged", name="web-b1.flatnet")
        decision = re.search(r"decision=\S+ target=\S+ owner=\S+ status=\d+", lines[-1])
        return i18n.text("demo.proxy_done", page=repr(page), decision=decision.group(0) if decision else lines[-1])

    def _access_lines(self, host: str, name: str) -> list[str]:
        return [line for line in self.lab.access_log(host).splitlines() if f'host="{name}"' in line]

    def offline(self) -> str:
        self.lab.stop("h2", "gateway")
        try:
            self.addresses["web-b2"] = self.lab.run_web("h2", "web-b2")
        finally:
            self.lab.start("h2", "gateway")
        _wait_for(lambda: _entry(self.lab, "h1", "web-b2"), "demo.not_listed", gateway=1, name="web-b2")
        return i18n.text("demo.offline_done", ip=self.addresses["web-b2"])

    def remove(self) -> str:
        self.lab.podman("h2", "rm", "-f", "-t", "0", "web-b2")
        _wait_for(lambda: _entry(self.lab, "h1", "web-b2") is None and _entry(self.lab, "h2", "web-b2") is None,
                  "demo.not_removed", name="web-b2")
        return i18n.text("demo.remove_done")


def run_demo() -> int:
    print(i18n.text("demo.title"), flush=True)
    paths = LabPaths(layout.default_lab_dir())
    existing = _existing_lab(paths)
    if existing is not None:
        raise FlatnetError(i18n.text("demo.lab_exists", path=existing, env=layout.lab_dir_assignment(existing)))

    demo = Demo()
    demo.step("demo.up", demo.build)
    if demo.lab is None:
        return 1
    for key, action in (
        ("demo.run", demo.run_containers),
        ("demo.route", demo.route),
        ("demo.ping", demo.ping),
        ("demo.registry", demo.registry),
        ("demo.proxy", demo.proxy),
        ("demo.offline", demo.offline),
        ("demo.remove", demo.remove),
    ):
        demo.step(key, action)

    if demo.failed:
        print(i18n.text("demo.summary_failed", failed=demo.failed, count=demo.number))
    else:
        print(i18n.text("demo.summary_ok", count=demo.number))
    print(i18n.text(
        "demo.explore", config=demo.lab.paths.gateway_config("h1"), env=layout.lab_dir_assignment(paths.root),
    ))
    return 1 if demo.failed else 0


def _existing_lab(paths: LabPaths) -> Path | None:
    """Return the directory of a lab that is up, in ``paths`` or anywhere else, or None.

    A running lab with no recorded owner is left to build.up, whose error names the command that removes it.
    """
    if read_state(paths) is not None:
        return paths.root
    if namespaces.lab_namespaces():
        return namespaces.recorded_owner()
    return None
