"""sliminfer's YAML reading, for config files and ``key=value`` overrides alike: a safe loader with the
stricter rules a config wants (no key written twice, string keys only, merge keys as YAML specifies, YAML 1.2
exponent floats), and its errors on one line.

Why apart from :mod:`sliminfer.core.config`: that module turns the data into a validated config; this one
only turns text into data, and is the one place that knows PyYAML's nodes and marks.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"  # a plain ``=``


class ConfigLoader(yaml.SafeLoader):
    """sliminfer's YAML loader, for files and ``key=value`` overrides: ``yaml.SafeLoader`` (no arbitrary objects)
    that also

    - refuses a key written twice in one mapping, where plain YAML loaders let the last one win silently (an
      edited preset with two ``budgets:`` lines runs only one of them);
    - refuses a mapping key that is not a string (``? [a, b]``, ``1:``, ``yes:``): every config key is a name;
    - takes merge keys (``generation: {<<: *defaults, seed: 1}``) as YAML specifies: the keys written beside
      ``<<`` win over the merged ones, which is not a duplicate;
    - reads YAML 1.2 floats with an exponent (``1e-3``, ``5E+2``, ``-2e4``, ``1.0e3``) as floats, where
      YAML 1.1 reads them as strings (``"1e-3"`` in quotes stays a string). Only this subclass resolves them
      so: the global ``yaml.SafeLoader`` is left as it is.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._flattened: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Check ``node``'s keys as written, then put the pairs of its ``<<`` mappings in front of its own,
        leaving out every key set before: keys written in ``node`` win over merged ones, and of several
        merged mappings (``<<: [*a, *b]``) the first that has a key wins, as YAML's merge key specifies.

        SafeConstructor calls this on every mapping before building it, and on a mapping merged into another,
        possibly before that one's own turn; each node is rewritten once, so ``node.value`` has no key twice.
        (PyYAML's own version tells merged keys apart by the identity of their strings, which can keep a key
        twice and let the wrong one win when a merged mapping has merges of its own.)
        """
        if id(node) in self._flattened:
            return
        self._flattened.add(id(node))
        own: list[tuple[yaml.Node, yaml.Node]] = []
        sources: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources.extend(self._merge_sources(node, value_node))
            else:
                if key_node.tag == _VALUE_TAG:  # a plain ``=`` as a key is the string '=' (as SafeLoader does)
                    key_node.tag = "tag:yaml.org,2002:str"
                own.append((key_node, value_node))
        keys = self._unique_keys(own)
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for source in sources:
            self.flatten_mapping(source)
            for key_node, value_node in source.value:
                key = self.construct_object(key_node)
                if key not in keys:
                    keys.add(key)
                    merged.append((key_node, value_node))
        node.value = merged + own

    @staticmethod
    def _merge_sources(node: yaml.MappingNode, value_node: yaml.Node) -> list[yaml.MappingNode]:
        """The mappings that ``<<: value`` merges into ``node``: one mapping, or a sequence of them."""
        if isinstance(value_node, yaml.MappingNode):
            return [value_node]
        if isinstance(value_node, yaml.SequenceNode):
            for sub in value_node.value:
                if not isinstance(sub, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"<< (merge key) takes a mapping or a list of mappings, found a {sub.id} in the list",
                        sub.start_mark,
                    )
            return list(value_node.value)
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping", node.start_mark,
            f"<< (merge key) takes a mapping or a list of mappings, not a {value_node.id}", value_node.start_mark,
        )

    def _unique_keys(self, pairs: list[tuple[yaml.Node, yaml.Node]]) -> set[str]:
        """The keys of ``pairs``, refusing a key that is not a string or that comes twice."""
        seen: set[str] = set()
        for key_node, _ in pairs:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "a sequence" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
                key = self.construct_object(key_node, deep=True)
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {key!r} is {kind}; mapping keys must be strings", key_node.start_mark
                )
            key = self.construct_object(key_node)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {key!r} is {type(key).__name__}; mapping keys must be strings "
                    f"(quote it: '{key_node.value}')", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key may appear once in a mapping)", key_node.start_mark
                )
            seen.add(key)
        return seen


ConfigLoader.add_implicit_resolver(  # YAML 1.2's floats with an exponent: 1e-3, 5E+2, .5e3 (1.1 needs 1.0e-3)
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line, with 1-based line and column: ``line 3, column 3: duplicate key 'seed' ...``
    (PyYAML's own text spans several lines and names the text ``"<unicode string>"``, not the file)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark, start = exc.problem_mark, exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        context = ""
        if exc.context:
            since = f" (from line {start.line + 1}, column {start.column + 1})" if start is not None else ""
            context = f"{exc.context}{since}; "
        return f"{where}: {context}{exc.problem}"
    return " ".join(str(exc).split())


__all__ = ["ConfigLoader", "yaml_problem"]
