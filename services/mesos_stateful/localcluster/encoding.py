"""The encodings of the Mesos v1 HTTP APIs: JSON (``application/json``) and protobuf
(``application/x-protobuf``), for request bodies and for responses / stream events.

Requests are parsed as the real master and agent parse them (``src/master/http.cpp``,
``Master::Http::scheduler`` and ``Master::Http::api``; ``src/slave/http.cpp``, ``Http::executor``):
the ``Content-Type`` must be exactly one of the two (no parameters, compared as strings); a JSON body
is parsed into JSON, then converted into the call's protobuf; a protobuf body is parsed with
``ParseFromString``. Errors are worded as Mesos words them:

* no ``Content-Type``: 400 ``Expecting 'Content-Type' to be present``
* another ``Content-Type``: 415 ``Expecting 'Content-Type' of application/json or
  application/x-protobuf``
* JSON that does not parse: 400 ``Failed to parse body into JSON: <error>``
* JSON that does not convert: 400 ``Failed to convert JSON into Call protobuf: <error>``; missing
  required fields read ``Missing required fields: <a, b>`` (stout's ``protobuf::parse``,
  ``3rdparty/stout/include/stout/protobuf.hpp``), a body that is not an object ``Expecting a JSON
  object``
* protobuf that does not parse (or lacks a required field): 400 ``Failed to parse body into Call
  protobuf``

One deliberate difference: stout's JSON→protobuf conversion ignores fields it does not know; here a
field unknown to the project's ``mesos.v1`` protos is an error (``ignore_unknown_fields=False``), so that
whatever works against the local cluster uses only the wire contract of ``protos/mesos``. JSON
``null`` is an unset field, as in stout.

Decoded bodies are returned as the JSON dicts the rest of the local cluster works on. A protobuf body
becomes the JSON Mesos would have written for it (field names as in the proto, enums by name, 64-bit
integers as JSON numbers, bytes base64: Mesos's ``jsonify`` of a protobuf), so both encodings reach the
master as the same dict.

Responses: ``accepted_media_type`` picks JSON if the ``Accept`` header allows it, else protobuf (the
order of ``Master::Http::scheduler``), following libprocess's ``Request::acceptsMediaType``
(``3rdparty/libprocess/src/http.cpp``); ``None`` means 406 with ``NOT_ACCEPTABLE``.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

Json = dict[str, Any]

JSON = "application/json"
PROTOBUF = "application/x-protobuf"

NO_CONTENT_TYPE = "Expecting 'Content-Type' to be present"
UNSUPPORTED_CONTENT_TYPE = f"Expecting 'Content-Type' of {JSON} or {PROTOBUF}"
NOT_ACCEPTABLE = f"Expecting 'Accept' to allow '{PROTOBUF}' or '{JSON}'"

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


class DecodeError(Exception):
    """A request body Mesos would refuse: ``status`` (400, 415 or 406) and Mesos's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode(body: bytes, content_type: str | None, message: type[Message]) -> Json:
    """The request ``body`` (sent with ``content_type``) as a JSON dict, checked strictly against
    ``message`` (e.g. ``scheduler_pb2.Call``); raises ``DecodeError`` worded as Mesos."""
    name = message.DESCRIPTOR.name
    if content_type is None:
        raise DecodeError(400, NO_CONTENT_TYPE)
    if content_type == PROTOBUF:
        parsed = message()
        try:
            parsed.ParseFromString(body)
        except ProtobufDecodeError:
            raise DecodeError(400, f"Failed to parse body into {name} protobuf") from None
        if not parsed.IsInitialized():  # ParseFromString of C++ fails on missing required fields
            raise DecodeError(400, f"Failed to parse body into {name} protobuf")
        return to_json(parsed)
    if content_type == JSON:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise DecodeError(400, f"Failed to parse body into JSON: {error}") from None
        try:
            to_message(value, message)
        except ValueError as error:
            raise DecodeError(400, f"Failed to convert JSON into {name} protobuf: {error}") from None
        payload: Json = _without_nulls(value)
        return payload
    raise DecodeError(415, UNSUPPORTED_CONTENT_TYPE)


def to_message(payload: Any, message: type[Message]) -> Message:
    """``payload`` parsed strictly into ``message``: unknown fields, wrong types and missing required
    fields raise ``ValueError`` (stout's wording for the last two: ``Expecting a JSON object``,
    ``Missing required fields: ...``)."""
    if not isinstance(payload, dict):
        raise ValueError("Expecting a JSON object")
    parsed = message()
    try:
        json_format.ParseDict(payload, parsed, ignore_unknown_fields=False)
    except json_format.ParseError as error:  # its first line; the rest lists the message's fields
        raise ValueError(str(error).splitlines()[0]) from None
    missing: list[str] = parsed.FindInitializationErrors()  # type: ignore[attr-defined]
    if missing:
        raise ValueError("Missing required fields: " + ", ".join(missing))
    return parsed


def encode(payload: Json, message: type[Message], media_type: str) -> bytes:
    """A response body or a stream record in ``media_type``: JSON as is; protobuf via a strict parse
    into ``message`` (an unknown field or a missing required field raises: a bug of the sender)."""
    if media_type == PROTOBUF:
        parsed = to_message(payload, message)
        return parsed.SerializeToString()
    return json.dumps(payload).encode()


def to_json(message: Message) -> Json:
    """The JSON Mesos writes for ``message`` (``jsonify(JSON::Protobuf(...))``): proto field names,
    enums by name, 64-bit integers as numbers (``MessageToDict`` makes them strings), bytes base64."""
    value = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _numbers(message, value)
    return value


def accepted_media_type(accept: str | None) -> str | None:
    """The media type of the answer to a request with this ``Accept`` header: JSON when accepted, else
    protobuf, else ``None`` (406, ``NOT_ACCEPTABLE``). No header accepts everything."""
    if accepts_media_type(accept, JSON):
        return JSON
    if accepts_media_type(accept, PROTOBUF):
        return PROTOBUF
    return None


def accepts_media_type(accept: str | None, media_type: str) -> bool:
    """libprocess ``Request::_acceptsMediaType``: candidates ``type/subtype``, ``type/*``, ``*/*`` in
    this order; the first entry of the header naming a candidate decides (``q=0`` refuses)."""
    parts = [p for p in media_type.split("/") if p]
    if len(parts) != 2:
        return False
    if accept is None:
        return True
    header = accept.replace(" ", "").replace("\t", "").replace("\n", "")
    for candidate in (media_type, f"{parts[0]}/*", "*/*"):
        for entry in (e for e in header.split(",") if e):
            tokens = [t for t in entry.split(";") if t]
            if not tokens or tokens[0].lower() != candidate.lower():
                continue
            q = [t.split("=", 1)[1] for t in tokens[1:] if t.startswith("q=") and "=" in t]
            if len(q) != 1:
                return True
            try:
                return float(q[0]) > 0
            except ValueError:
                return False
    return False


def _without_nulls(value: Any) -> Any:
    """JSON ``null`` is an unset field (stout's parser); drop such keys so the master sees them unset."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _numbers(message: Message, value: Json) -> None:
    """Turn the 64-bit integers ``MessageToDict`` wrote as strings back into JSON numbers, in place."""
    for field, field_value in message.ListFields():
        name = field.name
        if name not in value:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                for key, item in field_value.items():
                    _numbers(item, value[name][str(key)])
            elif value_field.type in _INT64:
                value[name] = {k: int(v) for k, v in value[name].items()}
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for item, item_json in zip(field_value, value[name], strict=True):
                    _numbers(item, item_json)
            else:
                _numbers(field_value, value[name])
        elif field.type in _INT64:
            if field.is_repeated:
                value[name] = [int(v) for v in value[name]]
            else:
                value[name] = int(value[name])
