"""Editing ONNX graphs in place: every node and name (subgraphs included), fresh names, and
repeated protobuf fields replaced or filtered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            found.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            found.extend(attribute.graphs)
    return found


def all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        nodes.append(node)
        for sub in subgraphs(node):
            nodes.extend(all_nodes(sub))
    return nodes


def all_names(graph: onnx.GraphProto) -> set[str]:
    names = {tensor.name for tensor in graph.initializer}
    names |= {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        if node.name:
            names.add(node.name)
    names.discard("")
    return names


def unique_name(base: str, taken: set[str]) -> str:
    name, number = base, 1
    while name in taken:
        number += 1
        name = f"{base}_{number}"
    taken.add(name)
    return name


def replace(field: Any, items: Iterable[Any]) -> None:
    """Replace the contents of a repeated protobuf field (with copies: protobuf owns its elements)."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field[:]
    field.extend(copies)


def remove_where(field: Any, condition: Any) -> None:
    """Delete in place the elements of a repeated protobuf field that `condition` picks."""
    for index in reversed(range(len(field))):
        if condition(field[index]):
            del field[index]
