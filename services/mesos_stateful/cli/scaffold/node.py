"""Renders a Node.js workload skeleton (``statefulctl new-workload NAME --lang node``) from
``templates/node/``: ``*.tmpl`` files through ``string.Template`` (a literal ``$`` is ``$$``),
the library (``lib/*.js``) and the placeholder member (``member/server.js``) as they are, and
``proto/**/*.proto``, the suite's protos the service imports, printed from the descriptors of the
generated Python modules (so the skeleton needs no checkout of ``protos/``; comments are not
kept: the originals are in the mesos-stateful repository). The files are written by
:func:`render.write`.

Why .proto text and not a FileDescriptorSet: protobufjs (under @grpc/proto-loader) reads a
descriptor set's ``map<,>`` fields as repeated entry messages, so an answer with a map (every
``status``) fails to serialize; from .proto text maps are maps."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from string import Template

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from mesos_stateful.api.stateful.v1 import state_service_pb2, workload_service_pb2
from mesos_stateful.cli.scaffold.render import _CALLBACKS, _TOPOLOGY_ENUM, Topology, package_name

# Generated file -> template (rendered).
_TEMPLATED = {
    "package.json": "package.json.tmpl",
    "README.md": "README.md.tmpl",
    "src/main.js": "src/main.js.tmpl",
    "src/description.js": "src/description.js.tmpl",
    "src/config.js": "src/config.js.tmpl",
}
# Copied as they are.
_VERBATIM = ["lib/errors.js", "lib/context.js", "lib/registration.js", "lib/service.js", "member/server.js"]
_ROLES = {Topology.master_replica: "'ROLE_MASTER', 'ROLE_SLAVE'", Topology.peers: "'ROLE_PEER'"}
PROTO_ROOT = "proto"

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None:
        return field.message_type.full_name
    if field.enum_type is not None:
        return field.enum_type.full_name
    return _SCALARS[field.type]


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _field(field: FieldDescriptor) -> str:
    entry = field.message_type
    if entry is not None and _is_map(field):
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        kind = f"map<{_type_name(key)}, {_type_name(value)}>"
    else:
        repeated = field.is_repeated
        kind = ("repeated " if repeated else "") + _type_name(field)
    return f"{kind} {field.name} = {field.number};"


def _message(message: Descriptor, indent: str = "") -> list[str]:
    lines = [f"{indent}message {message.name} {{"]
    inner = indent + "  "
    for nested in message.nested_types:
        if not nested.GetOptions().map_entry:
            lines += _message(nested, inner)
    for enum in message.enum_types:
        lines += _enum(enum, inner)
    # In declaration order; a oneof where its first field is (its fields are declared together).
    printed: set[str] = set()
    for field in message.fields:
        oneof = field.containing_oneof
        if oneof is None:
            lines.append(inner + _field(field))
        elif oneof.name not in printed:
            printed.add(oneof.name)
            lines.append(f"{inner}oneof {oneof.name} {{")
            lines += [f"{inner}  {_field(f)}" for f in oneof.fields]
            lines.append(f"{inner}}}")
    lines.append(f"{indent}}}")
    return lines


def _enum(enum: EnumDescriptor, indent: str = "") -> list[str]:
    values = [f"{indent}  {v.name} = {v.number};" for v in enum.values]
    return [f"{indent}enum {enum.name} {{", *values, f"{indent}}}"]


def proto_text(fd: FileDescriptor) -> str:
    """The proto3 source of a file descriptor (messages, maps, oneofs, enums, services; without
    comments or options)."""
    lines = [f"// {fd.name}, printed by statefulctl new-workload from the suite's descriptors.", ""]
    lines += ['syntax = "proto3";', "", f"package {fd.package};", ""]
    lines += [f'import "{dep.name}";' for dep in fd.dependencies]
    for enum in fd.enum_types_by_name.values():
        lines += ["", *_enum(enum)]
    for message in fd.message_types_by_name.values():
        lines += ["", *_message(message)]
    for service in fd.services_by_name.values():
        lines += ["", f"service {service.name} {{"]
        for m in service.methods:
            arg = ("stream " if m.client_streaming else "") + m.input_type.full_name
            ret = ("stream " if m.server_streaming else "") + m.output_type.full_name
            lines.append(f"  rpc {m.name}({arg}) returns ({ret});")
        lines.append("}")
    return "\n".join(lines) + "\n"


def proto_files() -> dict[str, str]:
    """``proto/<path>`` -> source of ``stateful/v1/workload_service.proto``,
    ``state_service.proto`` and the suite's files they import (google/protobuf/* are built into
    protobufjs and left out)."""
    out: dict[str, str] = {}

    def add(fd: FileDescriptor) -> None:
        if fd.name.startswith("google/protobuf/") or f"{PROTO_ROOT}/{fd.name}" in out:
            return
        for dep in fd.dependencies:
            add(dep)
        out[f"{PROTO_ROOT}/{fd.name}"] = proto_text(fd)

    add(workload_service_pb2.DESCRIPTOR)
    add(state_service_pb2.DESCRIPTOR)
    return out


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("templates", "node", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class NodeSkeleton:
    """A Node.js workload: ``name`` (a DNS-1123 label) and topology."""

    name: str
    topology: Topology

    def variables(self) -> dict[str, str]:
        callbacks = "".join(f"  - **{cb}**: {what}\n" for cb, what in _CALLBACKS[self.topology])
        return {
            "name": self.name,
            "env_prefix": f"STATEFUL_{package_name(self.name).upper()}_",
            "topology": self.topology.value,
            "topology_enum": _TOPOLOGY_ENUM[self.topology],
            "roles": _ROLES[self.topology],
            "callbacks": callbacks.rstrip("\n"),
        }

    def files(self) -> dict[str, str]:
        """Generated file (relative path) -> content."""
        variables = self.variables()
        templated = dict(_TEMPLATED)
        templated["src/servicer.js"] = f"servicer_{self.topology.name}.js.tmpl"
        out: dict[str, str] = {
            target: Template(_source(source)).substitute(variables) for target, source in templated.items()
        }
        out.update({path: _source(path) for path in _VERBATIM})
        out.update(proto_files())
        return out
