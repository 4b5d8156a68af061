"""Gateway config problems in the catalogue's words: the key, the value, the rule and what is valid.

pydantic reports each problem with a type (``missing``, ``greater_than_equal`` and so on), a
location of keys and list indexes, and the input. :func:`describe` turns one into a catalogue
message. It names the key as the TOML file spells it (``[routes] metric``, or a ``[[peers]]``
table by its host_id), shows the value and states the valid values. Ranges and choices come from
the model's own fields, and a validator's own rule comes as ``ValueError(Message(...))``.
Problem types without an entry here keep pydantic's English text inside a catalogue frame.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flatnet import i18n
from flatnet.i18n import Message

i18n.define({
    "config.not_found": (
        "gateway config {path} not found; pass an existing file with --config",
        "ゲートウェイ設定 {path} が見つかりません。--config で既存のファイルを指定してください",
    ),
    "config.is_directory": (
        "gateway config {path} is a directory; pass the TOML file with --config",
        "ゲートウェイ設定 {path} はディレクトリーです。--config で TOML ファイルを指定してください",
    ),
    "config.unreadable": ("gateway config {path} cannot be read: {error}", "ゲートウェイ設定 {path} を読めません: {error}"),
    "config.not_toml": ("gateway config {path} is not valid TOML: {error}", "ゲートウェイ設定 {path} は正しい TOML ではありません: {error}"),
    "config.invalid": ("gateway config {path} is invalid: {problems}", "ゲートウェイ設定 {path} が不正です: {problems}"),
    "config.problem_separator": ("; ", "。"),
    # Where a problem is.
    "config.key_in_table": ("[{table}] {key}", "[{table}] の {key}"),
    "config.peer": ("the peer with host_id {host_id}", "host_id {host_id} のピア"),
    "config.peer_number": ("[[peers]] table {number}", "{number} 番目の [[peers]] テーブル"),
    "config.key_in_peer": ("{peer}: {key}", "{peer}の {key}"),
    "config.top_level": ("the top level of the file", "ファイルの最上位"),
    # What is wrong.
    "config.missing": ("{key} is missing; add it, e.g. {example}", "{key} がありません。{example} のように追加してください"),
    "config.missing_plain": ("{key} is missing", "{key} がありません"),
    "config.unknown_key": (
        "unknown key {key!r} in {table}; valid keys there are {keys}",
        "{table} の {key!r} は不明なキーです。有効なキーは {keys} です",
    ),
    "config.wrong_type": ("{key} = {value} is not {kind}; e.g. {example}", "{key} = {value} は{kind}ではありません（例: {example}）"),
    "config.wrong_type_plain": ("{key} = {value} is not {kind}", "{key} = {value} は{kind}ではありません"),
    "config.not_table": (
        "{key} = {value} is not a table; write it as a [{key}] section with its own keys",
        "{key} = {value} はテーブルではありません。キーを並べた [{key}] セクションとして書いてください",
    ),
    "config.peers_not_list": (
        "peers must be a list of [[peers]] tables (double brackets), each with host_id and api",
        "peers は [[peers]] テーブル（二重の角かっこ）のリストにし、それぞれに host_id と api を書いてください",
    ),
    "config.out_of_range": ("{key} = {value} is out of range: give {rule}", "{key} = {value} は範囲外です。{rule}を指定してください"),
    "config.invalid_url": (
        "{key} = {value} is not a valid http(s) URL ({reason}); give one like {example}",
        "{key} = {value} は有効な http(s) URL ではありません（{reason}）。{example} のように指定してください",
    ),
    "config.url_scheme": ("the scheme must be http or https", "スキームは http か https にしてください"),
    "config.invalid_choice": (
        "{key} = {value} is invalid: give one of {choices}",
        "{key} = {value} は不正です。{choices} のいずれかを指定してください",
    ),
    "config.not_ipv4": ("{key} = {value} is not an IPv4 address; give one like {example}", "{key} = {value} は IPv4 アドレスではありません。{example} のように指定してください"),
    "config.rule": ("{key}: {rule}", "{key}: {rule}"),
    "config.other": ("{key} = {value} is invalid: {detail}", "{key} = {value} は不正です: {detail}"),
    # Kinds of value, and ranges built from a field's bounds.
    "config.kind_integer": ("a whole number", "整数"),
    "config.kind_number": ("a number", "数値"),
    "config.kind_seconds": ("a number of seconds", "秒数"),
    "config.kind_boolean": ("true or false", "true か false"),
    "config.kind_string": ("a quoted string", "引用符で囲んだ文字列"),
    "config.range_between": ("{kind} from {low} to {high}", "{low} から {high} までの{kind}"),
    "config.range_above_up_to": ("{kind} above {low} and at most {high}", "{low} より大きく {high} 以下の{kind}"),
    "config.range_above": ("{kind} above {low}", "{low} より大きい{kind}"),
    "config.range_at_least": ("{kind} of at least {low}", "{low} 以上の{kind}"),
    "config.range_at_most": ("{kind} of at most {high}", "{high} 以下の{kind}"),
})

_MAX_VALUE_CHARACTERS = 60
_KINDS = {
    "int_type": "config.kind_integer", "int_parsing": "config.kind_integer", "int_from_float": "config.kind_integer",
    "float_type": "config.kind_number", "float_parsing": "config.kind_number",
    "bool_type": "config.kind_boolean", "bool_parsing": "config.kind_boolean",
    "string_type": "config.kind_string", "path_type": "config.kind_string",
}
_RANGE_TYPES = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_URL_TYPES = ("url_parsing", "url_scheme", "url_type", "url_syntax_violation", "url_too_long")
# Examples of the required keys, which have no default to show. {host_id} is the host's own id.
_REQUIRED_EXAMPLES = {
    "host_id": "host_id = {host_id}",
    "data_dir": 'data_dir = "/var/lib/flatnet"',
    "api_listen": 'api_listen = "10.100.0.{host_id}:8080"',
    "proxy_listen": 'proxy_listen = "0.0.0.0:80"',
    "api": 'api = "http://10.100.0.{host_id}:8080"',
    "via": 'via = "172.20.48.1"',
}


class _Place:
    """The location of a problem: the field, the model that has it, and the words for its key."""

    def __init__(self) -> None:
        self.model: type[BaseModel] | None = None
        self.name: str | None = None
        self.field: FieldInfo | None = None
        self.table: str | None = None  # "routes" for the [routes] table, None at the top level
        self.peer: Message | None = None
        self.host_id: int | None = None  # the host_id of the peer, or of this host at the top level
        self.key: Message | str | None = None


def describe_all(errors: list[dict[str, Any]], model: type[BaseModel], raw: dict[str, Any]) -> str:
    """Describe every problem of a failed validation of ``raw`` against ``model``, in the locale's language."""
    problems = [describe(error, model, raw).render() for error in errors]
    return i18n.text("config.problem_separator").join(problems)


def describe(error: dict[str, Any], model: type[BaseModel], raw: dict[str, Any]) -> Message:
    """Describe one pydantic error (an item of ``ValidationError.errors()``) as a catalogue message."""
    place = _locate(error["loc"], model, raw)
    kind = error["type"]
    value = _show(error.get("input"))
    rule = _rule_message(error)

    if kind == "missing":
        example = _example(place)
        if example is None:
            return Message("config.missing_plain", key=place.key)
        return Message("config.missing", key=place.key, example=example)
    if kind == "extra_forbidden":
        table = place.peer or (f"[{place.table}]" if place.table else Message("config.top_level"))
        return Message("config.unknown_key", key=place.name, table=table, keys=", ".join(place.model.model_fields))
    if place.key is None:
        return rule or Message("config.rule", key=Message("config.top_level"), rule=error["msg"])
    if rule is not None:
        if _table_model(place.field) is not None and not _is_list(place.field) and error["loc"][-1] == place.name:
            # A rule across the keys of a table, such as [routes] mode and via.
            return Message("config.rule", key=f"[{place.name}]", rule=rule)
        return Message("config.rule", key=place.key, rule=rule)
    if kind in ("tuple_type", "list_type") and place.name == "peers" and place.table is None:
        return Message("config.peers_not_list")
    if kind in ("model_type", "model_attributes_type", "dict_type") and isinstance(error["loc"][-1], int):
        # An item of peers = [...] that is not a table.
        return Message("config.peers_not_list")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return Message("config.not_table", key=place.name, value=value)
    if kind in _KINDS:
        kind_text = Message(_value_kind(place) if _KINDS[kind] == "config.kind_number" else _KINDS[kind])
        example = _example(place)
        if example is None:
            return Message("config.wrong_type_plain", key=place.key, value=value, kind=kind_text)
        return Message("config.wrong_type", key=place.key, value=value, kind=kind_text, example=example)
    if kind in _RANGE_TYPES:
        range_rule = _range(place)
        if range_rule is not None:
            return Message("config.out_of_range", key=place.key, value=value, rule=range_rule)
    if kind in _URL_TYPES:
        reason = Message("config.url_scheme") if kind == "url_scheme" else error.get("ctx", {}).get("error", error["msg"])
        example = f'"http://10.100.0.{place.host_id or 2}:8080"'
        return Message("config.invalid_url", key=place.key, value=value, reason=reason, example=example)
    if kind in ("enum", "literal_error"):
        return Message("config.invalid_choice", key=place.key, value=value, choices=_choices(place, error))
    if kind == "ip_v4_address":
        example = _example(place) or '"192.0.2.1"'
        return Message("config.not_ipv4", key=place.key, value=value, example=example.split(" = ")[-1])
    return Message("config.other", key=place.key, value=value, detail=error["msg"])


def _locate(location: tuple[int | str, ...], model: type[BaseModel], raw: object) -> _Place:
    """Follow ``location`` from the top of the file to the failing key."""
    place = _Place()
    place.model = model
    if isinstance(raw, dict):
        place.host_id = _host_id(raw)
    for position, part in enumerate(location):
        last = position == len(location) - 1
        if isinstance(part, int):
            # An index into the list of [[peers]] tables.
            items = raw if isinstance(raw, list) else []
            raw = items[part] if part < len(items) else None
            place.peer, place.host_id = _peer_words(part, raw, items)
            place.key = place.peer
            continue
        place.name = str(part)
        place.field = place.model.model_fields.get(place.name) if place.model else None
        place.key = Message("config.key_in_peer", peer=place.peer, key=place.name) if place.peer else (
            Message("config.key_in_table", table=place.table, key=place.name) if place.table else place.name
        )
        table_model = _table_model(place.field)
        if table_model is not None and not last:
            place.model = table_model
            if not _is_list(place.field):
                place.table = place.name
            raw = raw.get(place.name) if isinstance(raw, dict) else None
    if location and location[-1] == "host_id" and place.peer is not None:
        # A peer whose host_id is the problem is named by its table's position.
        index = location[-2]
        place.peer = Message("config.peer_number", number=int(index) + 1)
        place.key = Message("config.key_in_peer", peer=place.peer, key="host_id")
    return place


def _peer_words(index: int, raw: object, items: list[object]) -> tuple[Message, int | None]:
    """Name the [[peers]] table at ``index`` by its host_id when that is valid and unique, else by its position."""
    host_id = _host_id(raw)
    others = [_host_id(item) for item in items]
    if host_id is not None and others.count(host_id) == 1:
        return Message("config.peer", host_id=host_id), host_id
    return Message("config.peer_number", number=index + 1), host_id


def _host_id(raw: object) -> int | None:
    value = raw.get("host_id") if isinstance(raw, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 254:
        return value
    return None


def _plain_annotation(field: FieldInfo | None) -> Any:
    """Return the field's type without ``| None``."""
    annotation = field.annotation if field else None
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        others = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(others) == 1:
            return others[0]
    return annotation


def _table_model(field: FieldInfo | None) -> type[BaseModel] | None:
    annotation = _plain_annotation(field)
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_list(field: FieldInfo | None) -> bool:
    return typing.get_origin(_plain_annotation(field)) in (tuple, list)


def _rule_message(error: dict[str, Any]) -> Message | None:
    """Return the catalogue message a validator raised as ``ValueError(Message(...))``, if it did."""
    raised = error.get("ctx", {}).get("error")
    if isinstance(raised, ValueError) and raised.args and isinstance(raised.args[0], Message):
        return raised.args[0]
    return None


def _show(value: object) -> str:
    """Write ``value`` as TOML would, cut to a readable length."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, enum.Enum):
        text = json.dumps(value.value, ensure_ascii=False)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > _MAX_VALUE_CHARACTERS:
        text = text[: _MAX_VALUE_CHARACTERS - 1] + "…"
    return text


def _example(place: _Place) -> str | None:
    """Return a line of TOML that sets the key validly: its default, or a typical value of a required key."""
    if place.name is None or place.field is None:
        return None
    if place.name in _REQUIRED_EXAMPLES and (place.field.is_required() or place.field.default is None):
        return _REQUIRED_EXAMPLES[place.name].format(host_id=place.host_id or 2)
    default = place.field.get_default(call_default_factory=False) if not place.field.is_required() else None
    if default is None or isinstance(default, (BaseModel, tuple)):
        return None
    return f"{place.name} = {_show(default)}"


def _value_kind(place: _Place) -> str:
    field = place.field
    if _plain_annotation(field) is int:
        return "config.kind_integer"
    seconds = field is not None and ((field.description or "").startswith("seconds") or (place.name or "").endswith("_seconds"))
    return "config.kind_seconds" if seconds else "config.kind_number"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range(place: _Place) -> Message | None:
    """Return the field's valid range, from its ge, gt and le bounds, in words."""
    if place.field is None:
        return None
    bounds: dict[str, float] = {}
    for constraint in place.field.metadata:
        for name, kind in (("ge", annotated_types.Ge), ("gt", annotated_types.Gt), ("le", annotated_types.Le)):
            if isinstance(constraint, kind):
                bounds[name] = getattr(constraint, name)
    kind = Message(_value_kind(place))
    if "ge" in bounds and "le" in bounds:
        return Message("config.range_between", kind=kind, low=_number(bounds["ge"]), high=_number(bounds["le"]))
    if "gt" in bounds and "le" in bounds:
        return Message("config.range_above_up_to", kind=kind, low=_number(bounds["gt"]), high=_number(bounds["le"]))
    if "gt" in bounds:
        return Message("config.range_above", kind=kind, low=_number(bounds["gt"]))
    if "ge" in bounds:
        return Message("config.range_at_least", kind=kind, low=_number(bounds["ge"]))
    if "le" in bounds:
        return Message("config.range_at_most", kind=kind, high=_number(bounds["le"]))
    return None


def _choices(place: _Place, error: dict[str, Any]) -> str:
    annotation = _plain_annotation(place.field)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return ", ".join(json.dumps(member.value) for member in annotation)
    return str(error.get("ctx", {}).get("expected", "-"))
